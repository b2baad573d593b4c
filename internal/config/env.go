package config

import (
	"bytes"
	"fmt"
	"strings"
)

// expanded is a configuration file after ${VAR} substitution.
type expanded struct {
	text []byte
	// srcLine maps a line of text (index = line-1) to the line of the
	// original file it came from; they differ only when a value contains a
	// newline.
	srcLine []int
	// problems are located at original lines and carry no file name yet.
	problems []Problem
	// badLines are original lines with an env problem; other problems on
	// them are consequences and are not reported.
	badLines map[int]bool
}

// expandEnv fills ${VAR} and ${VAR:-default} from lookup and turns $$ into
// $, line by line so that every line keeps its number. Values are inserted
// as text, as envsubst does. Lines that are whole YAML comments are left
// alone, so a commented-out ${VAR} needs no value.
func expandEnv(data []byte, lookup func(string) (string, bool)) expanded {
	e := expanded{badLines: map[int]bool{}}
	var out bytes.Buffer
	out.Grow(len(data))
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]

		start := out.Len()
		if isCommentLine(line) {
			out.Write(line)
		} else {
			e.expandLine(&out, line, n, lookup)
		}
		chunk := out.Bytes()[start:]
		count := bytes.Count(chunk, []byte{'\n'})
		if !bytes.HasSuffix(chunk, []byte{'\n'}) {
			count++
		}
		for range count {
			e.srcLine = append(e.srcLine, n)
		}
	}
	e.text = out.Bytes()
	return e
}

func (e *expanded) expandLine(out *bytes.Buffer, line []byte, n int, lookup func(string) (string, bool)) {
	for i := 0; i < len(line); {
		c := line[i]
		if c != '$' || i+1 == len(line) {
			out.WriteByte(c)
			i++
			continue
		}
		switch line[i+1] {
		case '$':
			out.WriteByte('$')
			i += 2
		case '{':
			end := bytes.IndexByte(line[i+2:], '}')
			if end < 0 {
				e.problem(n, "${", "is not closed — end it with } or write $$ for a literal $")
				out.Write(line[i:])
				return
			}
			expr := string(line[i+2 : i+2+end])
			out.WriteString(e.substitute(expr, n, lookup))
			i += end + 3
		default:
			out.WriteByte('$')
			i++
		}
	}
}

// substitute returns the value for the inside of one ${...}.
func (e *expanded) substitute(expr string, n int, lookup func(string) (string, bool)) string {
	name, def, hasDef := strings.Cut(expr, ":-")
	if !isEnvName(name) {
		e.problem(n, "${"+expr+"}", fmt.Sprintf("%q is not a variable name — use ${NAME} or ${NAME:-default} with letters, digits and _ (write $$ for a literal $)", name))
		return ""
	}
	val, ok := lookup(name)
	switch {
	case hasDef && val == "":
		return def
	case !ok:
		e.problem(n, "${"+name+"}", fmt.Sprintf("environment variable %s is not set — set it, or give a default with ${%s:-value}", name, name))
		return ""
	}
	return val
}

func (e *expanded) problem(line int, key, msg string) {
	e.problems = append(e.problems, Problem{Line: line, Key: key, Msg: msg})
	e.badLines[line] = true
}

func isCommentLine(line []byte) bool {
	t := bytes.TrimLeft(line, " \t")
	return len(t) > 0 && t[0] == '#'
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
