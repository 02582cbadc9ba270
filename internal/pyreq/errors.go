package pyreq

import (
	"fmt"
	"strings"
)

// SyntaxError describes input that could not be parsed: a version, a
// specifier, a requirement or a line of a requirements file. File and Line
// are only set by ParseRequirementsFile.
type SyntaxError struct {
	File  string // file name given to ParseRequirementsFile, or ""
	Line  int    // 1-based line number, or 0
	Input string // the text that was rejected
	Msg   string // what is wrong with it
}

// Error formats the error as `file:line: "input": msg`, leaving out the
// location parts that are not set.
func (e *SyntaxError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		fmt.Fprintf(&b, "%s: ", e.File)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	fmt.Fprintf(&b, "%q: %s", e.Input, e.Msg)
	return b.String()
}

// errorMessage returns the Msg of a *SyntaxError, or the error text of any
// other error.
func errorMessage(err error) string {
	if se, ok := err.(*SyntaxError); ok {
		return se.Msg
	}
	return err.Error()
}
