package listen

import (
	"crypto/tls"
	"encoding/binary"
	"io"

	"golang.org/x/net/http2"
)

// RFC 9113 §6.5.3 says the values of a SETTINGS frame are processed in the
// order they appear, so a setting named twice takes its last value.
// golang.org/x/net/http2's server instead hangs up (GOAWAY PROTOCOL_ERROR,
// its "settings_big_or_dups" check, a guard of its own that no option
// turns off) on a SETTINGS frame that repeats a setting; nginx applies the
// last value. Rather than fork the library, settingsConn edits what the
// client sends on its way in: in a SETTINGS frame, each setting whose
// identifier appears again later in the same frame is given an identifier
// nothing defines, which RFC 9113 §6.5.2 says a receiver MUST ignore. x/net
// then sees no duplicate and applies the value the RFC says wins. The frame
// keeps its length, so nothing is reframed; every other frame passes
// through with only its 9-byte header looked at, and writes are untouched.
//
// A repeated setting with an invalid value is the one kept (the first such
// occurrence), so x/net still refuses it with the error code the RFC names,
// as processing in order would. Two things in-order processing would do
// that this does not: an intermediate SETTINGS_INITIAL_WINDOW_SIZE that
// would overflow a stream's window is not refused when a later value
// undoes it, and an intermediate smaller SETTINGS_HEADER_TABLE_SIZE is not
// signalled by the HPACK encoder; both only matter to a client that names
// a setting twice, which none does in practice.

const (
	frameHeaderLen  = 9
	frameSettings   = 0x4
	flagSettingsAck = 0x1
	settingLen      = 6
	// maxEditedSettings bounds the SETTINGS frames edited, and so what is
	// held back: x/net refuses one with more than 100 settings anyway
	// (the same "settings_big_or_dups" check), and is left to.
	maxEditedSettings = 100
	// ignoredSettingBase is where the identifiers given to overridden
	// settings start: 0xf000–0xffff is reserved for experimental use
	// in the HTTP/2 settings registry (RFC 7540 §11.3), so no standard gives
	// them a meaning.
	ignoredSettingBase = 0xf000
)

// settingsConn is the client's TLS connection as x/net/http2 reads it, the
// client preface and then frames, SETTINGS frames edited as said above. It
// keeps *tls.Conn's other methods: ConnectionState, which x/net uses for
// r.TLS, and the write path.
//
// Its writes go through a headerHold (h2writes.go), which sends the head
// of a response together with the start of its body.
type settingsConn struct {
	*tls.Conn
	in  settingsReader
	out *headerHold
}

func newSettingsConn(c *tls.Conn) *settingsConn {
	return &settingsConn{Conn: c, in: newSettingsReader(c), out: newHeaderHold(c, func() { c.Close() })}
}

func (c *settingsConn) Read(p []byte) (int, error) { return c.in.Read(p) }

func (c *settingsConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// Close closes the connection first: a held head being written to a
// client that reads nothing holds the hold's lock until the write fails.
func (c *settingsConn) Close() error {
	err := c.Conn.Close()
	c.out.stop()
	return err
}

// settingsReader follows the client-to-server byte stream of an HTTP/2
// connection from src and edits its SETTINGS frames.
type settingsReader struct {
	src     io.Reader
	preface int // client preface bytes still to pass
	hdr     [frameHeaderLen]byte
	nhdr    int // bytes of a frame header split across reads gathered in hdr
	skip    int // payload bytes of the current frame still to pass
	// A SETTINGS payload that one read did not bring in full is held back
	// until it is complete (want > 0 while gathering), then edited and
	// returned from out.
	held        [maxEditedSettings * settingLen]byte
	nheld, want int
	out         []byte
}

func newSettingsReader(src io.Reader) settingsReader {
	return settingsReader{src: src, preface: len(http2.ClientPreface)}
}

func (c *settingsReader) Read(p []byte) (int, error) {
	for {
		if c.want > 0 {
			if err := c.gather(); err != nil {
				return 0, err
			}
		}
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		n, err := c.src.Read(p)
		n = c.scan(p[:n])
		// Zero bytes and no error happens only when the read held back the
		// start of a SETTINGS payload: gather the rest rather than return
		// nothing.
		if n > 0 || err != nil || c.want == 0 || len(p) == 0 {
			return n, err
		}
	}
}

// gather reads the rest of a held-back SETTINGS payload; on an error what
// was gathered stays, for a later Read to go on from.
func (c *settingsReader) gather() error {
	for c.nheld < c.want {
		n, err := c.src.Read(c.held[c.nheld:c.want])
		c.nheld += n
		if err != nil && c.nheld < c.want {
			return err
		}
	}
	c.out = c.held[:c.want]
	editSettings(c.out)
	c.want, c.nheld = 0, 0
	return nil
}

// scan follows the frames in b, which was just read, editing SETTINGS
// payloads it holds in full. It returns how much of b to pass on: less than
// len(b) when b ends inside a SETTINGS payload to edit, which is then held
// back.
func (c *settingsReader) scan(b []byte) int {
	i := 0
	for i < len(b) {
		switch {
		case c.preface > 0:
			k := min(c.preface, len(b)-i)
			c.preface -= k
			i += k
		case c.skip > 0:
			k := min(c.skip, len(b)-i)
			c.skip -= k
			i += k
		default:
			var h []byte
			if c.nhdr == 0 && len(b)-i >= frameHeaderLen {
				h = b[i : i+frameHeaderLen]
				i += frameHeaderLen
			} else {
				k := copy(c.hdr[c.nhdr:], b[i:])
				c.nhdr += k
				i += k
				if c.nhdr < frameHeaderLen {
					return i
				}
				h = c.hdr[:]
				c.nhdr = 0
			}
			length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			if h[3] != frameSettings || h[4]&flagSettingsAck != 0 ||
				length < 2*settingLen || length%settingLen != 0 || length > len(c.held) {
				// Not one that can repeat a setting, or one x/net refuses
				// whatever its contents.
				c.skip = length
				continue
			}
			if len(b)-i >= length {
				editSettings(b[i : i+length])
				i += length
				continue
			}
			c.want = length
			c.nheld = copy(c.held[:], b[i:])
			return i
		}
	}
	return i
}

// editSettings gives every setting in the SETTINGS payload p that another
// one of the same identifier overrides an identifier nothing defines. The
// one kept of an identifier is its last, or its first invalid one if any.
func editSettings(p []byte) {
	n := len(p) / settingLen
	id := func(i int) http2.SettingID { return http2.SettingID(binary.BigEndian.Uint16(p[i*settingLen:])) }
	var overridden [maxEditedSettings]bool
	edit := false
	for i := range n {
		kept, invalid := -1, false
		for j := range n {
			if id(j) != id(i) || invalid {
				continue
			}
			kept = j
			invalid = !validSetting(http2.Setting{ID: id(j), Val: binary.BigEndian.Uint32(p[j*settingLen+2:])})
		}
		overridden[i] = kept != i
		edit = edit || overridden[i]
	}
	if !edit {
		return
	}
	next := http2.SettingID(ignoredSettingBase)
	for i := range n {
		if !overridden[i] {
			continue
		}
		for inFrame(p, next) {
			next++
		}
		binary.BigEndian.PutUint16(p[i*settingLen:], uint16(next))
		next++
	}
}

// inFrame reports whether the SETTINGS payload p names id.
func inFrame(p []byte, id http2.SettingID) bool {
	for i := 0; i+settingLen <= len(p); i += settingLen {
		if http2.SettingID(binary.BigEndian.Uint16(p[i:])) == id {
			return true
		}
	}
	return false
}

// validSetting is whether x/net's server accepts s's value: Setting.Valid,
// and the check its processSetting adds for NO_RFC7540_PRIORITIES.
func validSetting(s http2.Setting) bool {
	if s.ID == http2.SettingNoRFC7540Priorities && s.Val > 1 {
		return false
	}
	return s.Valid() == nil
}
