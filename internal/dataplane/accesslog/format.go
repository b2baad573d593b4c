package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Layouts of the two formats' timestamps. JSON's milliseconds are inserted
// between the cached second and the cached zone.
const (
	layoutCombined   = "02/Jan/2006:15:04:05 -0700" // nginx's $time_local
	layoutJSONSecond = "2006-01-02T15:04:05"
	layoutJSONZone   = "Z07:00"
)

const hexUpper = "0123456789ABCDEF" // nginx prints \xHH in upper case
const hexLower = "0123456789abcdef" // encoding/json prints \u00hh in lower case

// clockCache keeps the formatted timestamp of the last second seen:
// formatting a time costs more than the rest of a line, and consecutive
// requests almost always finish in the same second. Guarded by Logger.mu.
type clockCache struct {
	loc    *time.Location
	sec    int64
	valid  bool
	json   bool
	second []byte // combined: the whole timestamp; JSON: up to the seconds
	zone   []byte // JSON only: "Z" or "+01:00"
}

func (c *clockCache) init(json bool, loc *time.Location) {
	c.loc, c.json, c.valid = loc, json, false
	c.second = make([]byte, 0, 32)
	c.zone = make([]byte, 0, 8)
}

func (c *clockCache) refresh(t time.Time) {
	sec := t.Unix()
	if c.valid && sec == c.sec {
		return
	}
	lt := t.In(c.loc)
	if c.json {
		c.second = lt.AppendFormat(c.second[:0], layoutJSONSecond)
		c.zone = lt.AppendFormat(c.zone[:0], layoutJSONZone)
	} else {
		c.second = lt.AppendFormat(c.second[:0], layoutCombined)
	}
	c.sec, c.valid = sec, true
}

// logTime is when the request finished, which is what nginx's $time_local
// shows (nginx stamps the line when it writes it at the end of the request).
func logTime(e *Entry) time.Time {
	if e.Start.IsZero() {
		return time.Now()
	}
	return e.Start.Add(e.Duration)
}

// appendCombined appends nginx's combined format, then cutover's fields:
//
//	$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" service=… pool=… target=… upstream_status=… duration=… request_id=…
func (l *Logger) appendCombined(b []byte, e *Entry) []byte {
	b = appendNginxOrDash(b, e.RemoteAddr, false)
	b = append(b, " - - ["...)
	l.clock.refresh(logTime(e))
	b = append(b, l.clock.second...)
	b = append(b, `] "`...)
	if len(e.Method) == 0 && len(e.URI) == 0 {
		b = append(b, '-')
	} else {
		b = appendNginx(b, e.Method, false)
		b = append(b, ' ')
		b = appendNginx(b, e.URI, false)
		if e.Proto != "" {
			b = append(b, ' ')
			b = appendNginx(b, e.Proto, false)
		}
	}
	b = append(b, `" `...)
	b = appendStatus(b, e.Status)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, ` "`...)
	b = appendNginxOrDash(b, e.Referer, false)
	b = append(b, `" "`...)
	b = appendNginxOrDash(b, e.UserAgent, false)
	b = append(b, `" service=`...)
	// The key=value fields escape spaces too, so that splitting the tail of
	// the line on spaces always yields whole fields (the request ID comes
	// from the client).
	b = appendNginxOrDash(b, e.Service, true)
	b = append(b, " pool="...)
	b = appendNginxOrDash(b, e.Pool, true)
	b = append(b, " target="...)
	b = appendNginxOrDash(b, e.Target, true)
	b = append(b, " upstream_status="...)
	if e.UpstreamStatus == 0 {
		b = append(b, '-')
	} else {
		b = appendStatus(b, e.UpstreamStatus)
	}
	// Seconds with millisecond resolution, truncated, like nginx's
	// $request_time.
	b = append(b, " duration="...)
	b = appendThousandths(b, int64(max(e.Duration, 0)/time.Millisecond))
	b = append(b, " request_id="...)
	b = appendNginxOrDash(b, e.RequestID, true)
	return append(b, '\n')
}

// appendJSON appends one JSON object and a newline.
func (l *Logger) appendJSON(b []byte, e *Entry) []byte {
	t := logTime(e)
	l.clock.refresh(t)
	b = append(b, `{"time":"`...)
	b = append(b, l.clock.second...)
	b = append(b, '.')
	b = append3(b, t.Nanosecond()/int(time.Millisecond))
	b = append(b, l.clock.zone...)
	b = append(b, `","remote_addr":`...)
	b = appendJSONString(b, e.RemoteAddr)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, e.URI)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, e.Proto)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.Host)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, e.Referer)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, e.UserAgent)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, e.RequestID)
	b = append(b, `,"service":`...)
	b = appendJSONString(b, e.Service)
	b = append(b, `,"pool":`...)
	b = appendJSONString(b, e.Pool)
	b = append(b, `,"target":`...)
	b = appendJSONString(b, e.Target)
	// null rather than 0 when no upstream answered: 0 is not a status.
	b = append(b, `,"upstream_status":`...)
	if e.UpstreamStatus == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
	}
	b = append(b, `,"duration_ms":`...)
	b = appendThousandths(b, int64(max(e.Duration, 0)/time.Microsecond))
	return append(b, "}\n"...)
}

// appendStatus prints three digits, as nginx's "%03ui" does (a request
// that got no response logs 000).
func appendStatus(b []byte, s int) []byte {
	if s < 0 || s > 999 {
		return strconv.AppendInt(b, int64(s), 10)
	}
	return append3(b, s)
}

// append3 appends 0 <= n <= 999 as exactly three digits.
func append3(b []byte, n int) []byte {
	return append(b, byte('0'+n/100), byte('0'+n/10%10), byte('0'+n%10))
}

// appendThousandths appends n thousandths as a decimal with three places
// (3 → "0.003"), without floating point.
func appendThousandths(b []byte, n int64) []byte {
	b = strconv.AppendInt(b, n/1000, 10)
	b = append(b, '.')
	return append3(b, int(n%1000))
}

// text is what Entry's fields are made of.
type text interface{ ~string | ~[]byte }

func appendNginxOrDash[T text](b []byte, s T, escapeSpace bool) []byte {
	if len(s) == 0 {
		return append(b, '-') // nginx prints "-" for an empty variable
	}
	return appendNginx(b, s, escapeSpace)
}

// appendNginx escapes like nginx's access log: '"', '\', control bytes and
// bytes above 0x7e become \xHH, so a line is printable ASCII and a quoted
// field cannot end early.
func appendNginx[T text](b []byte, s T, escapeSpace bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c > ' ' && c < 0x7f && c != '"' && c != '\\') || (c == ' ' && !escapeSpace) {
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\', 'x', hexUpper[c>>4], hexUpper[c&0xf])
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendJSONString appends s as a JSON string. Bytes that are not valid
// UTF-8 become U+FFFD (one per byte), so the output is always valid JSON
// in valid UTF-8 whatever the client sent.
func appendJSONString[T text](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexLower[c>>4], hexLower[c&0xf])
			}
			i++
			start = i
			continue
		}
		var tmp [utf8.UTFMax]byte
		r, size := utf8.DecodeRune(tmp[:copy(tmp[:], s[i:])])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but they end a line in JavaScript; encoding/json
			// escapes them too.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexLower[r&0xf])
			i += size
			start = i
		default:
			i += size
		}
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
