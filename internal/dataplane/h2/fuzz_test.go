package h2

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzConnFrames feeds a connection arbitrary bytes after the client
// preface: whatever they are, the connection must neither panic nor hang,
// and Serve must return once the client is gone with every handler done.
func FuzzConnFrames(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "a"}, {Name: ":path", Value: "/"}, {Name: "content-length", Value: "4"}} {
		enc.WriteField(hf)
	}
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, []byte("body"))
	fr.WriteWindowUpdate(1, 100)
	fr.WritePing(false, [8]byte{1})
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	f.Add(b.Bytes())
	f.Add(b.Bytes()[:30])
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		srv, cli := net.Pipe()
		c := NewConn(srv, Options{Logger: quiet(), WriteTimeout: time.Second, IdleTimeout: time.Second}, handlerFunc(echo))
		served := make(chan struct{})
		go func() { c.Serve(); close(served) }()
		go io.Copy(io.Discard, cli)
		cli.SetWriteDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(cli, http2.ClientPreface)
		cli.Write(data)
		cli.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after the client closed")
		}
	})
}
