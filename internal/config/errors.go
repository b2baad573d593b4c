package config

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Problem is one thing wrong with a configuration, located so a person can
// go straight to it.
type Problem struct {
	// File is the configuration file ("" for a configuration built in code).
	File string
	// Line is the 1-based line in File (0 when unknown).
	Line int
	// Key is the dotted path of the offending key, e.g.
	// "services.web.pools.blue[1]" ("" for file-level problems such as YAML
	// syntax errors).
	Key string
	// Msg says what is wrong and, after " — ", how to fix it.
	Msg string
}

// String formats the problem as FILE:LINE: KEY: message — fix, leaving out
// the parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		fmt.Fprintf(&b, "%s: ", p.File)
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(shortKey(p.Key))
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// maxKeyShown bounds how much of a key a message shows: enough to find it,
// not a whole file pasted into a key by mistake.
const maxKeyShown = 120

// shortKey is key as a message shows it: cut at maxKeyShown bytes (on a
// character boundary), saying how long it is.
func shortKey(key string) string {
	if len(key) <= maxKeyShown {
		return key
	}
	cut := maxKeyShown
	for cut > 0 && !utf8.RuneStart(key[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (a key of %d bytes)", key[:cut], len(key))
}

// Errors is every problem found in a configuration. Load and Parse return it
// (as error) so that callers can list all problems at once.
type Errors struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems as they appear in the file; problems without
// a line go last, keeping the order they were found in.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		li, lj := ps[i].Line, ps[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}
