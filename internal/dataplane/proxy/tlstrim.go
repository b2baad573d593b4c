package proxy

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// tlsTrim lets a parked connection drop the input buffers crypto/tls keeps
// for the life of a connection: its record buffer (rawInput, grown to the
// largest record received: the ClientHello, 1.5-2 KiB with a post-quantum
// key share), the reader over the last record's plaintext, which keeps
// that buffer alive, and its handshake-message buffer (hand, as large as
// the ClientHello). They are ~3.5 kB of an idle connection's ~7.5 kB of
// live heap, and the collector's headroom doubles that in RSS. crypto/tls
// has no call for it (nginx sets OpenSSL's SSL_MODE_RELEASE_BUFFERS), so
// they are reached by offset, found by name and type once per Proxy; a
// Go release that renames them makes trimming a no-op, which
// TestTLSTrimFindsCryptoTLSBuffers reports.
type tlsTrim struct {
	ok                    bool
	rawInput, input, hand uintptr
}

func newTLSTrim() tlsTrim {
	t := reflect.TypeFor[tls.Conn]()
	field := func(name string, want reflect.Type) (uintptr, bool) {
		f, ok := t.FieldByName(name)
		return f.Offset, ok && f.Type == want && len(f.Index) == 1
	}
	var k tlsTrim
	var ok1, ok2, ok3 bool
	k.rawInput, ok1 = field("rawInput", reflect.TypeFor[bytes.Buffer]())
	k.input, ok2 = field("input", reflect.TypeFor[bytes.Reader]())
	k.hand, ok3 = field("hand", reflect.TypeFor[bytes.Buffer]())
	k.ok = ok1 && ok2 && ok3
	return k
}

// trim drops tc's empty input buffers; crypto/tls allocates them again
// when the next record arrives. Only tc's one reader may call it, between
// reads: the fields are guarded by crypto/tls's input lock, which only a
// read takes.
func (k tlsTrim) trim(tc *tls.Conn) {
	if !k.ok {
		return
	}
	base := unsafe.Pointer(tc)
	raw := (*bytes.Buffer)(unsafe.Add(base, k.rawInput))
	in := (*bytes.Reader)(unsafe.Add(base, k.input))
	hand := (*bytes.Buffer)(unsafe.Add(base, k.hand))
	// A partial record or unread plaintext stays where it is.
	if raw.Len() == 0 && in.Len() == 0 {
		*raw = bytes.Buffer{}
		in.Reset(nil)
	}
	if hand.Len() == 0 {
		*hand = bytes.Buffer{}
	}
}
