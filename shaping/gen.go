package shaping

// The generated files (bpf_bpfel.go, bpf_bpfel.o) are committed so a plain
// `go build` needs no clang. Regenerate after editing bpf/shaper.c with
// `go generate ./shaping/`.
//go:generate go tool bpf2go -tags linux -target bpfel -type bucket_cfg -type bucket_state -type counters -type lpm4_key -type lpm6_key -type lpm_val bpf bpf/shaper.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall
