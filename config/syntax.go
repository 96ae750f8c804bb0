package config

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	goccy "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

// A YAML syntax error is located by a parser that reports where it stopped
// as a token position: the decoder's own errors name only the line of the
// enclosing block (a stray key deep in a list is reported at the list's
// first line) or no line at all (invalid UTF-8).

// syntaxError locates the syntax error err that decoding data raised, and
// says what it is.
func syntaxError(data []byte, err error) (Pos, string) {
	if at, b, ok := invalidUTF8(data); ok {
		return at, "not valid YAML: byte 0x" + strconv.FormatUint(uint64(b), 16) + " is not UTF-8; save the file as UTF-8 text"
	}
	var se *goccy.SyntaxError
	if _, perr := parser.ParseBytes(data, 0); errors.As(perr, &se) && se.Token != nil && se.Token.Position != nil {
		return Pos{Line: se.Token.Position.Line, Column: se.Token.Position.Column}, "not valid YAML: " + se.Message
	}
	// Only the decoder saw a problem: its line is the best there is.
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Pos{Line: line, Column: 1}, "not valid YAML: " + m[2]
	}
	return Pos{Line: 1, Column: 1}, "not valid YAML: " + msg
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// invalidUTF8 finds the first byte of data that is not UTF-8, and where it
// stands (its column counts the characters ahead of it on its line).
func invalidUTF8(data []byte) (Pos, byte, bool) {
	at := Pos{Line: 1, Column: 1}
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return at, data[i], true
		}
		if r == '\n' {
			at.Line, at.Column = at.Line+1, 1
		} else {
			at.Column++
		}
		i += size
	}
	return Pos{}, 0, false
}
