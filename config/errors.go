package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in the config file, 1-based as editors count.
type Pos struct {
	Line   int
	Column int
}

// Error is one problem found in a config file, located at the offending
// value.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Column, e.Msg)
}

// MarshalJSON writes the error as tools read it: {"file", "line",
// "column", "message"}, line and column 0 when it has no place in the file.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Column  int    `json:"column"`
		Message string `json:"message"`
	}{e.File, e.Pos.Line, e.Pos.Column, e.Msg})
}

// ErrorList is every problem of a file, in file order. Load returns it as
// its error so callers can print one located message a line.
type ErrorList []*Error

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find a single *Error in the list.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// problems collects errors while a file is decoded and validated.
type problems struct {
	file string
	list ErrorList
}

func (p *problems) add(at Pos, format string, args ...any) {
	p.list = append(p.list, &Error{File: p.file, Pos: at, Msg: fmt.Sprintf(format, args...)})
}

// sorted returns the problems in file order, without exact duplicates.
func (p *problems) sorted() ErrorList {
	out := slices.Clone(p.list)
	slices.SortStableFunc(out, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Column, b.Pos.Column))
	})
	return slices.CompactFunc(out, func(a, b *Error) bool { return *a == *b })
}
