package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestEventStreamBoundaries: the tracker finds where an event stream can
// end without cutting an event, with every line ending EventSource knows,
// and stops there, not splitting a CRLF.
func TestEventStreamBoundaries(t *testing.T) {
	for _, c := range []struct {
		name    string
		sent    string // recorded before the goodbye
		next    string // read after it
		relayed string // what goes out before the end
	}{
		{"at a boundary", "data: a\n\n", "data: b\n\n", ""},
		{"start of the stream", "", "data: a\n\n", ""},
		{"mid-line", "data: a", "bc\n\ndata: d\n\n", "bc\n\n"},
		{"after one line end", "data: a\n", "\ndata: b\n\n", "\n"},
		{"CRLF", "data: a\r\n", "\r\ndata: b\r\n\r\n", "\r\n"},
		{"CR only", "data: a\r", "\rdata: b\r\r", "\r"},
		{"multi-line event", "data: a\ndata: b\n", "id: 3\n\nretry: 5\n\n", "id: 3\n\n"},
		{"comment", ": ping", "\n\ndata: x\n\n", "\n\n"},
		{"CRLF split after the blank line's CR", "data: a\r\n\r", "\ndata: b\r\n\r\n", "\n"},
	} {
		var e eventStream
		e.advance([]byte(c.sent), false)
		next := []byte(c.next)
		k := e.advance(next, true)
		if got := string(next[:k]); got != c.relayed {
			t.Errorf("%s: relayed %q before the end, want %q", c.name, got, c.relayed)
		}
		if !e.atBoundary() {
			t.Errorf("%s: not at a boundary after %q", c.name, next[:k])
		}
	}
	var e eventStream
	e.advance([]byte("data: a\n\ndata: b"), false)
	if e.atBoundary() {
		t.Error("mid-event reported as a boundary")
	}
}

// frame builds a WebSocket frame with a payload of n bytes.
func frame(op byte, n int, masked bool) []byte {
	f := []byte{0x80 | op}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		f = append(f, mask|byte(n))
	case n < 1<<16:
		f = append(f, mask|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mask|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, bytes.Repeat([]byte{'x'}, n)...)
}

// TestWebSocketFrameBoundaries: fed a stream of frames of every length
// encoding, masked and not, cut at every byte, the tracker stops exactly
// at the end of the frame under way, and notices close frames.
func TestWebSocketFrameBoundaries(t *testing.T) {
	for _, masked := range []bool{false, true} {
		frames := [][]byte{frame(0x1, 5, masked), frame(0x2, 300, masked), frame(0x0, 0, masked), frame(0x2, 70000, masked), frame(0x9, 3, masked)}
		var stream []byte
		ends := []int{0}
		for _, f := range frames {
			stream = append(stream, f...)
			ends = append(ends, len(stream))
		}
		for cut := 0; cut < len(stream); cut += 1 + cut/50 {
			var fr wsFrames
			fr.advance(stream[:cut], false)
			k := fr.advance(stream[cut:], true)
			want := 0
			for _, e := range ends {
				if e >= cut {
					want = e - cut
					break
				}
			}
			if k != want || !fr.atBoundary() {
				t.Fatalf("masked=%v cut at %d: stopped after %d more bytes (boundary %v), want %d", masked, cut, k, fr.atBoundary(), want)
			}
		}
		var fr wsFrames
		fr.advance(stream, false)
		if fr.closed {
			t.Fatal("a close frame reported where none went")
		}
		fr.advance(wsCloseFrame(masked), false)
		if !fr.closed || !fr.atBoundary() {
			t.Fatalf("masked=%v: the proxy's own close frame not followed (closed %v, boundary %v)", masked, fr.closed, fr.atBoundary())
		}
	}
}

// TestWebSocketCloseFrame: 1001 with its reason, unmasked to clients and
// masked to targets.
func TestWebSocketCloseFrame(t *testing.T) {
	plain := wsCloseFrame(false)
	if plain[0] != 0x88 || plain[1]&0x80 != 0 || int(plain[1]) != len(plain)-2 {
		t.Fatalf("frame to a client: % x", plain[:2])
	}
	if code := binary.BigEndian.Uint16(plain[2:4]); code != wsGoingAway || string(plain[4:]) != wsCloseReason {
		t.Fatalf("frame to a client says %d %q", code, plain[4:])
	}
	m := wsCloseFrame(true)
	if m[1]&0x80 == 0 || int(m[1]&0x7f) != len(m)-6 {
		t.Fatalf("frame to a target not masked: % x", m[:2])
	}
	key, payload := m[2:6], append([]byte(nil), m[6:]...)
	for i := range payload {
		payload[i] ^= key[i%4]
	}
	if !bytes.Equal(payload, plain[2:]) {
		t.Fatalf("masked payload unmasks to %q, want %q", payload, plain[2:])
	}
}
