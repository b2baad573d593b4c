package listen

import (
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

// RFC 9113 §6.5.3: the values of a SETTINGS frame are processed in the
// order they appear, so a setting named twice takes its last value.
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
