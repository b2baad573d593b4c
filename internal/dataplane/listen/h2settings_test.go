package listen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// frame is one HTTP/2 frame as bytes on the wire.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream)
	return append(b, payload...)
}

// settingsPayload is the payload of a SETTINGS frame naming ss in order.
func settingsPayload(ss ...http2.Setting) []byte {
	var b []byte
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

// chunkReader returns data in reads of the sizes given (cycling; 0 is
// read as 1), as a TLS connection may split it.
type chunkReader struct {
	data  []byte
	sizes []byte
	k     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, max(1, int(r.sizes[r.k%len(r.sizes)])))
		r.k++
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// readAllSized reads r to EOF with buffers of the sizes given (cycling).
func readAllSized(t testing.TB, r io.Reader, sizes []byte) []byte {
	var out []byte
	buf := make([]byte, 256)
	zeros := 0
	for k := 0; ; k++ {
		n := len(buf)
		if len(sizes) > 0 {
			n = max(1, int(sizes[k%len(sizes)]))
		}
		m, err := r.Read(buf[:n])
		out = append(out, buf[:m]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if zeros = zeros + 1; m > 0 {
			zeros = 0
		}
		if zeros > 100 {
			t.Fatal("the reader returns nothing, over and over")
		}
	}
}

// edited is what a settingsReader passes on of stream, read as split.
func edited(t testing.TB, stream, srcSizes, readSizes []byte) []byte {
	sr := newSettingsReader(&chunkReader{data: stream, sizes: srcSizes})
	return readAllSized(t, &sr, readSizes)
}

// TestSettingsReaderEditsRepeatedSettings: each setting overridden later
// in its frame gets an identifier nothing defines; x/net's own frame parser
// then finds no duplicate and the value that wins by RFC 9113 §6.5.3.
func TestSettingsReaderEditsRepeatedSettings(t *testing.T) {
	const (
		win   = http2.SettingInitialWindowSize
		push  = http2.SettingEnablePush
		table = http2.SettingHeaderTableSize
	)
	s := func(id http2.SettingID, v uint32) http2.Setting { return http2.Setting{ID: id, Val: v} }
	cases := []struct {
		name     string
		in, want []http2.Setting
		kept     map[http2.SettingID]uint32 // what x/net reads
	}{
		{"twice", []http2.Setting{s(win, 100), s(win, 1)}, []http2.Setting{s(0xf000, 100), s(win, 1)}, map[http2.SettingID]uint32{win: 1}},
		{"three times", []http2.Setting{s(win, 1), s(win, 2), s(win, 3)}, []http2.Setting{s(0xf000, 1), s(0xf001, 2), s(win, 3)}, map[http2.SettingID]uint32{win: 3}},
		{"two settings repeated, others between",
			[]http2.Setting{s(table, 0), s(win, 7), s(push, 0), s(table, 4096), s(win, 9)},
			[]http2.Setting{s(0xf000, 0), s(0xf001, 7), s(push, 0), s(table, 4096), s(win, 9)},
			map[http2.SettingID]uint32{table: 4096, win: 9, push: 0}},
		{"the ignored identifiers skip those the frame names",
			[]http2.Setting{s(0xf000, 5), s(win, 1), s(0xf001, 6), s(win, 2)},
			[]http2.Setting{s(0xf000, 5), s(0xf002, 1), s(0xf001, 6), s(win, 2)},
			map[http2.SettingID]uint32{win: 2, 0xf000: 5, 0xf001: 6}},
		{"no repeat is left alone", []http2.Setting{s(win, 1), s(push, 0)}, []http2.Setting{s(win, 1), s(push, 0)}, map[http2.SettingID]uint32{win: 1, push: 0}},
		// Processing in order meets the invalid value first: it stays,
		// for x/net to refuse with the RFC's error code.
		{"a repeat with an invalid value keeps its first invalid one",
			[]http2.Setting{s(push, 1), s(push, 2), s(push, 3), s(push, 0)},
			[]http2.Setting{s(0xf000, 1), s(push, 2), s(0xf001, 3), s(0xf002, 0)},
			map[http2.SettingID]uint32{push: 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stream := append([]byte(http2.ClientPreface), frame(0x4, 0, 0, settingsPayload(c.in...))...)
			stream = append(stream, frame(0x0, 0x1, 1, []byte("body"))...)
			got := edited(t, stream, nil, nil)
			want := append([]byte(http2.ClientPreface), frame(0x4, 0, 0, settingsPayload(c.want...))...)
			want = append(want, frame(0x0, 0x1, 1, []byte("body"))...)
			if !bytes.Equal(got, want) {
				t.Fatalf("edited stream:\n got %x\nwant %x", got, want)
			}
			fr := http2.NewFramer(nil, bytes.NewReader(got[len(http2.ClientPreface):]))
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("x/net's parser refused the edited frame: %v", err)
			}
			sf := f.(*http2.SettingsFrame)
			if sf.HasDuplicates() {
				t.Errorf("x/net still sees a repeated setting in %x", got)
			}
			for id, v := range c.kept {
				if got, _ := sf.Value(id); got != v {
					t.Errorf("setting %v: x/net reads %d, want %d", id, got, v)
				}
			}
		})
	}
}

// TestSettingsReaderLeavesOtherFramesAlone: an ACK SETTINGS, a SETTINGS too
// big for x/net to accept, one whose length is not a whole number of
// settings, and frames whose payloads look like SETTINGS frames pass
// through unchanged, as does the preface, however the stream is split.
func TestSettingsReaderLeavesOtherFramesAlone(t *testing.T) {
	dup := settingsPayload(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 2})
	big := bytes.Repeat(dup, maxEditedSettings/2+1)
	inner := frame(0x4, 0, 0, dup)
	stream := []byte(http2.ClientPreface)
	for _, f := range [][]byte{
		frame(0x4, 0x1, 0, dup), // ACK: x/net refuses its payload
		frame(0x4, 0, 0, big),
		frame(0x4, 0, 0, dup[:len(dup)-1]),
		frame(0x0, 0, 1, inner), // DATA carrying what looks like SETTINGS
		frame(0x1, 0x4, 3, inner),
		frame(0x6, 0, 0, []byte("pingpong")),
		frame(0x4, 0x1, 0, nil),
	} {
		stream = append(stream, f...)
	}
	for _, split := range [][]byte{nil, {1}, {2, 3}, {9}, {24, 9, 1}, {7, 13, 1, 200}} {
		for _, rsplit := range [][]byte{nil, {1}, {5, 9}, {33}} {
			if got := edited(t, stream, split, rsplit); !bytes.Equal(got, stream) {
				t.Fatalf("source reads %v, reads %v: stream changed:\n got %x\nwant %x", split, rsplit, got, stream)
			}
		}
	}
}

// TestSettingsReaderHoldsBackASplitPayload: a SETTINGS payload that comes
// in pieces is edited all the same, whatever the reads' sizes, and what
// follows it is not held up.
func TestSettingsReaderHoldsBackASplitPayload(t *testing.T) {
	in := settingsPayload(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 15}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 2})
	out := settingsPayload(http2.Setting{ID: 0xf000, Val: 1}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 15}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 2})
	tail := frame(0x8, 0, 0, []byte{0, 0, 1, 0})
	stream := append(append([]byte(http2.ClientPreface), frame(0x4, 0, 0, in)...), tail...)
	want := append(append([]byte(http2.ClientPreface), frame(0x4, 0, 0, out)...), tail...)
	for split := 1; split <= len(stream); split++ {
		for _, rsplit := range [][]byte{nil, {1}, {3}, {9, 18}} {
			if got := edited(t, stream, []byte{byte(split)}, rsplit); !bytes.Equal(got, want) {
				t.Fatalf("source reads of %d, reads %v:\n got %x\nwant %x", split, rsplit, got, want)
			}
		}
	}
}

// wireFrame is a frame as parsed back for the fuzz comparison.
type wireFrame struct {
	head    [9]byte
	payload []byte
}

func parseFrames(t testing.TB, b []byte) []wireFrame {
	if !bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		t.Fatalf("the stream does not start with the preface: %x", b[:min(len(b), 24)])
	}
	b = b[len(http2.ClientPreface):]
	var fs []wireFrame
	for len(b) > 0 {
		if len(b) < 9 {
			t.Fatalf("%d bytes after the last frame", len(b))
		}
		var f wireFrame
		copy(f.head[:], b)
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < 9+n {
			t.Fatalf("frame of %d bytes cut at %d", n, len(b)-9)
		}
		f.payload = b[9 : 9+n]
		fs = append(fs, f)
		b = b[9+n:]
	}
	return fs
}

// fuzzStream builds a preface and frames from spec: SETTINGS frames (some
// ACK) naming a few identifiers often, DATA, HEADERS and PING frames.
func fuzzStream(spec []byte) []byte {
	stream := []byte(http2.ClientPreface)
	ids := []http2.SettingID{http2.SettingInitialWindowSize, http2.SettingEnablePush, http2.SettingHeaderTableSize, 0xf000, 0xf001}
	for len(spec) >= 2 {
		kind, n := spec[0], int(spec[1])
		spec = spec[2:]
		switch kind % 5 {
		case 0, 1: // SETTINGS
			var ss []http2.Setting
			for range n % 12 {
				if len(spec) == 0 {
					break
				}
				// Values 0..2: ENABLE_PUSH 2 is invalid.
				ss = append(ss, http2.Setting{ID: ids[int(spec[0])%len(ids)], Val: uint32(spec[0]>>4) % 3})
				spec = spec[1:]
			}
			flags := byte(0)
			if kind%5 == 1 && len(ss) == 0 {
				flags = 0x1
			}
			stream = append(stream, frame(0x4, flags, 0, settingsPayload(ss...))...)
		case 2:
			stream = append(stream, frame(0x0, 0, 1, bytes.Repeat([]byte{0x4}, n))...)
		case 3:
			stream = append(stream, frame(0x1, 0x4, 1, spec[:min(n%16, len(spec))])...)
		case 4:
			stream = append(stream, frame(0x6, 0, 0, []byte("12345678"))...)
		}
	}
	return stream
}

// FuzzSettingsReader: however the stream is split, the edited stream has
// the original's frames, headers and payloads byte for byte, but for
// SETTINGS settings overridden later in their frame, renamed to distinct
// identifiers the frame does not name; the setting kept of each identifier
// is its last, or its first invalid one; no identifier repeats.
func FuzzSettingsReader(f *testing.F) {
	f.Add([]byte{0, 2, 0, 0, 2, 4, 3, 3, 1, 2, 3}, []byte{1}, []byte{9})
	f.Add([]byte{0, 11, 0, 16, 32, 0, 16, 1, 17, 33, 0, 0, 16, 1, 4, 0}, []byte{5, 30}, []byte{1, 2})
	f.Add([]byte{1, 0, 2, 200, 0, 3, 0x10, 0x10, 0x20}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, spec, srcSizes, readSizes []byte) {
		stream := fuzzStream(spec[:min(len(spec), 4096)])
		got := edited(t, stream, srcSizes, readSizes)
		if len(got) != len(stream) {
			t.Fatalf("edited stream is %d bytes, the original %d", len(got), len(stream))
		}
		orig, out := parseFrames(t, stream), parseFrames(t, got)
		if len(orig) != len(out) {
			t.Fatalf("%d frames became %d", len(orig), len(out))
		}
		for k := range orig {
			o, e := orig[k], out[k]
			if o.head != e.head {
				t.Fatalf("frame %d: header %x became %x", k, o.head, e.head)
			}
			if o.head[3] != 0x4 || o.head[4]&0x1 != 0 {
				if !bytes.Equal(o.payload, e.payload) {
					t.Fatalf("frame %d (type %d): payload %x became %x", k, o.head[3], o.payload, e.payload)
				}
				continue
			}
			checkEdit(t, o.payload, e.payload)
		}
	})
}

// checkEdit checks the edit of one SETTINGS payload.
func checkEdit(t *testing.T, orig, out []byte) {
	n := len(orig) / 6
	at := func(p []byte, i int) http2.Setting {
		return http2.Setting{ID: http2.SettingID(binary.BigEndian.Uint16(p[i*6:])), Val: binary.BigEndian.Uint32(p[i*6+2:])}
	}
	seen := map[http2.SettingID]bool{}
	for i := range n {
		o, e := at(orig, i), at(out, i)
		if o.Val != e.Val {
			t.Fatalf("setting %d: value %d became %d", i, o.Val, e.Val)
		}
		if seen[e.ID] {
			t.Fatalf("setting %d: identifier %v repeats in the edited frame %x", i, e.ID, out)
		}
		seen[e.ID] = true
		// The one to keep: the first invalid occurrence, else the last.
		keep := -1
		for j := range n {
			if at(orig, j).ID == o.ID {
				keep = j
				if !validSetting(at(orig, j)) {
					break
				}
			}
		}
		switch {
		case keep == i && e.ID != o.ID:
			t.Fatalf("setting %d (%v=%d) is the one that counts but became %v", i, o.ID, o.Val, e.ID)
		case keep != i && e.ID == o.ID:
			t.Fatalf("setting %d (%v=%d) is overridden by setting %d but kept its identifier", i, o.ID, o.Val, keep)
		case keep != i:
			if e.ID < 0xf000 {
				t.Fatalf("setting %d renamed to %v, outside the experimental range", i, e.ID)
			}
			for j := range n {
				if at(orig, j).ID == e.ID {
					t.Fatalf("setting %d renamed to %v, which the frame names at %d", i, e.ID, j)
				}
			}
		}
	}
}

// TestHTTP2RepeatedSettingTakesItsLastValue: over the real HTTPS listener,
// a client's SETTINGS frame naming SETTINGS_INITIAL_WINDOW_SIZE twice is
// acknowledged (x/net alone answers GOAWAY PROTOCOL_ERROR), the request is
// served, and the later value is the stream window the server keeps to.
func TestHTTP2RepeatedSettingTakesItsLastValue(t *testing.T) {
	body := strings.Repeat("x", 2000)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(be.Close)
	f := startH2Front(t, proxy.Options{}, be.Listener.Addr().String())

	for _, c := range []struct{ first, last uint32 }{{5, 4096}, {4096, 5}} {
		t.Run(fmt.Sprintf("%d then %d", c.first, c.last), func(t *testing.T) {
			h := dialH2(t, f)
			h.c.SetDeadline(time.Now().Add(10 * time.Second))
			h.awaitSettingsAck() // of dialH2's empty SETTINGS
			win := http2.SettingInitialWindowSize
			if err := h.fr.WriteSettings(http2.Setting{ID: win, Val: c.first}, http2.Setting{ID: win, Val: c.last}); err != nil {
				t.Fatal(err)
			}
			h.awaitSettingsAck()
			id := h.headers(request("GET", "/"), true)
			if a := h.await(id); a.status != 200 {
				t.Fatalf("answer %v, want 200", a)
			}
			// The server may send no more DATA than the window allows;
			// the client grants more, c.last at a time, once it is used up.
			granted, got := int(c.last), 0
			for {
				fr, err := h.fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the body (%d of %d bytes, window %d): %v", got, len(body), granted, err)
				}
				d, ok := fr.(*http2.DataFrame)
				if !ok || d.StreamID != id {
					if g, ok := fr.(*http2.GoAwayFrame); ok {
						t.Fatalf("GOAWAY %v", g.ErrCode)
					}
					continue
				}
				got += len(d.Data())
				if got > granted {
					t.Fatalf("the server sent %d bytes with a window of %d: the first value, %d, applies", got, granted, c.first)
				}
				if d.StreamEnded() {
					break
				}
				if got == granted {
					if err := h.fr.WriteWindowUpdate(id, c.last); err != nil {
						t.Fatal(err)
					}
					granted += int(c.last)
				}
			}
			if got != len(body) {
				t.Fatalf("body of %d bytes, want %d", got, len(body))
			}
		})
	}
}

// awaitSettingsAck reads frames until the server acknowledges a SETTINGS
// frame, acknowledging the server's own.
func (h *rawH2) awaitSettingsAck() {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("awaiting a SETTINGS ACK: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				return
			}
			h.fr.WriteSettingsAck()
		case *http2.GoAwayFrame:
			h.t.Fatalf("GOAWAY %v (%q) awaiting a SETTINGS ACK", f.ErrCode, f.DebugData())
		}
	}
}

// BenchmarkSettingsReader is the cost of following the frames, per frame,
// read the way x/net's Framer reads (a 9-byte header, then the payload)
// and in 16 KB reads, against reading the same bytes directly.
func BenchmarkSettingsReader(b *testing.B) {
	var stream []byte
	const frames = 100
	for i := range frames {
		if i%10 == 0 {
			stream = append(stream, frame(0x1, 0x4, uint32(2*i+1), make([]byte, 40))...)
		} else {
			stream = append(stream, frame(0x0, 0, uint32(2*i+1), make([]byte, 1024))...)
		}
	}
	for _, pattern := range []string{"framer", "16KB"} {
		for _, wrapped := range []bool{false, true} {
			name := pattern + "/direct"
			if wrapped {
				name = pattern + "/settingsReader"
			}
			b.Run(name, func(b *testing.B) {
				src := &loopReader{data: stream}
				var r io.Reader = src
				if wrapped {
					sr := newSettingsReader(src)
					sr.preface = 0
					r = &sr
				}
				hdr := make([]byte, 9)
				buf := make([]byte, 16<<10)
				b.SetBytes(int64(len(stream)))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if pattern == "16KB" {
						for left := len(stream); left > 0; {
							n, _ := r.Read(buf[:min(len(buf), left)])
							left -= n
						}
						continue
					}
					for range frames {
						io.ReadFull(r, hdr)
						n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
						io.ReadFull(r, buf[:n])
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
			})
		}
	}
}

// loopReader reads data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}
