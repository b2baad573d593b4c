package forward

import (
	"net"
	"net/netip"
	"regexp"
	"sync"
	"testing"
)

func trusted(prefixes ...string) *Trusted {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	return NewTrusted(ps)
}

func TestTrustedContains(t *testing.T) {
	tr := trusted("10.0.0.0/8", "192.168.1.5/32", "fd00::/8", "::1/128", "::ffff:172.16.0.0/108", "fe80::/10")
	cases := map[string]bool{
		"10.1.2.3":               true,
		"10.255.255.255":         true,
		"11.0.0.1":               false,
		"192.168.1.5":            true,
		"192.168.1.6":            false,
		"::ffff:10.1.2.3":        true, // an IPv4 peer on a dual-stack socket
		"::ffff:11.0.0.1":        false,
		"fd12:3456::1":           true,
		"fe00::1":                false,
		"::1":                    true,
		"::2":                    false,
		"127.0.0.1":              false,
		"172.16.3.4":             true, // trusted as a mapped prefix, seen as IPv4
		"::ffff:172.31.255.255":  true,
		"172.32.0.1":             false,
		"fe80::1%eth0":           true, // a zone does not hide a trusted link-local peer
		"2001:db8::1":            false,
		"::ffff:192.168.1.5":     true,
		"::ffff:c0a8:105":        true,  // the same, written in hex
		"::c0a8:105":             false, // IPv4-compatible, not mapped: a different address
		"0.0.0.0":                false,
		"255.255.255.255":        false,
		"::ffff:255.255.255.255": false,
	}
	for a, want := range cases {
		if got := tr.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
	var none *Trusted
	if none.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("a nil set trusts an address")
	}
	if NewTrusted(nil).Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("an empty set trusts an address")
	}
	if (&Trusted{}).Contains(netip.Addr{}) {
		t.Error("the zero address is trusted")
	}
}

func TestNewClient(t *testing.T) {
	tr := trusted("10.0.0.0/8", "::1/128")
	cases := []struct {
		remote  net.Addr
		tls     bool
		ip      string
		trusted bool
		proto   string
	}{
		{&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5000}, false, "10.1.2.3", true, "http"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 5000}, true, "10.1.2.3", true, "https"},
		{&net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 80}, false, "203.0.113.9", false, "http"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 80}, true, "::1", true, "https"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 80}, false, "2001:db8::7", false, "http"},
		{&net.UnixAddr{Name: "/run/cutover.sock", Net: "unix"}, false, "unix", false, "http"},
		{&net.TCPAddr{}, false, "unix", false, "http"}, // no address known
		{nil, false, "unix", false, "http"},
	}
	for _, c := range cases {
		cl := NewClient(c.remote, c.tls, tr)
		if cl.IP != c.ip || cl.Trusted != c.trusted || cl.Proto() != c.proto || cl.TLS != c.tls {
			t.Errorf("NewClient(%v) = ip %q trusted %v proto %s; want %q %v %s", c.remote, cl.IP, cl.Trusted, cl.Proto(), c.ip, c.trusted, c.proto)
		}
		if c.ip != "unix" && cl.Addr != netip.MustParseAddr(c.ip) {
			t.Errorf("NewClient(%v).Addr = %v, want %s", c.remote, cl.Addr, c.ip)
		}
	}

	// A real connection's peer address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	cl := NewClient(sc.RemoteAddr(), false, trusted("127.0.0.0/8"))
	if cl.IP != "127.0.0.1" || !cl.Trusted {
		t.Fatalf("client of a real connection = %q trusted %v, want 127.0.0.1 trusted", cl.IP, cl.Trusted)
	}
}

func TestAppendXFF(t *testing.T) {
	tr := trusted("10.0.0.0/8")
	proxy := NewClient(&net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 1}, false, tr)
	direct := NewClient(&net.TCPAddr{IP: net.ParseIP("198.51.100.4"), Port: 1}, false, tr)
	cases := []struct {
		c        *Client
		incoming string
		want     string
	}{
		{&proxy, "203.0.113.1", "203.0.113.1, 10.0.0.2"},
		{&proxy, "203.0.113.1, 10.0.0.9", "203.0.113.1, 10.0.0.9, 10.0.0.2"},
		{&proxy, "", "10.0.0.2"},
		// A client that is not a trusted proxy cannot claim addresses.
		{&direct, "1.2.3.4", "198.51.100.4"},
		{&direct, "", "198.51.100.4"},
	}
	for _, c := range cases {
		var in []byte
		if c.incoming != "" {
			in = []byte(c.incoming)
		}
		if got := string(c.c.AppendXFF([]byte("X: "), in)); got != "X: "+c.want {
			t.Errorf("%s.AppendXFF(%q) = %q, want %q", c.c.IP, c.incoming, got, "X: "+c.want)
		}
	}
}

func TestRealIP(t *testing.T) {
	tr := trusted("10.0.0.0/8", "fd00::/8")
	proxy := NewClient(&net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 1}, false, tr)
	direct := NewClient(&net.TCPAddr{IP: net.ParseIP("198.51.100.4"), Port: 1}, false, tr)
	cases := []struct {
		c    *Client
		xff  string
		want string // "" for nil: the peer is the client
	}{
		{&proxy, "203.0.113.1", "203.0.113.1"},
		// Right-most untrusted wins; trusted hops are skipped.
		{&proxy, "203.0.113.1, 198.51.100.7, 10.0.0.5", "198.51.100.7"},
		{&proxy, "203.0.113.1,10.1.1.1,10.0.0.5", "203.0.113.1"},
		{&proxy, "  203.0.113.1 ,  10.1.1.1  ", "203.0.113.1"},
		{&proxy, "2001:db8::1, fd00::5", "2001:db8::1"},
		{&proxy, "::ffff:10.9.9.9, 203.0.113.1", "203.0.113.1"},
		{&proxy, "203.0.113.1, ::ffff:10.9.9.9", "203.0.113.1"},
		// Every hop trusted: the left-most is as far as the list goes.
		{&proxy, "10.0.0.7, 10.0.0.6", "10.0.0.7"},
		// Empty elements are skipped.
		{&proxy, "203.0.113.1, , 10.0.0.6,", "203.0.113.1"},
		// Garbage stops the walk: nothing left of it is believed.
		{&proxy, "203.0.113.1, garbage, 10.0.0.6", "10.0.0.6"},
		{&proxy, "203.0.113.1, 10.0.0.6, not-an-ip", ""},
		{&proxy, "203.0.113.1:443", ""},
		{&proxy, "", ""},
		{&proxy, ", ,", ""},
		// A peer that is not trusted: its header is ignored.
		{&direct, "203.0.113.1", ""},
	}
	for _, c := range cases {
		var in []byte
		if c.xff != "" {
			in = []byte(c.xff)
		}
		got := c.c.RealIP(in, tr)
		if c.want == "" {
			if got != nil {
				t.Errorf("%s.RealIP(%q) = %q, want nil (the peer)", c.c.IP, c.xff, got)
			}
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s.RealIP(%q) = %q, want %q", c.c.IP, c.xff, got, c.want)
		}
	}
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestIDs(t *testing.T) {
	g := NewIDs()
	const perG, gs = 2000, 8
	ids := make([][]string, gs)
	var wg sync.WaitGroup
	for i := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perG {
				ids[i] = append(ids[i], string(g.Append(nil)))
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, l := range ids {
		for _, id := range l {
			if !hex32.MatchString(id) {
				t.Fatalf("ID %q is not 32 lower-case hex digits", id)
			}
			if seen[id] {
				t.Fatalf("ID %s issued twice", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != perG*gs {
		t.Fatalf("%d IDs, want %d", len(seen), perG*gs)
	}

	// Another process (generator) starts from another random prefix.
	a, b := string(NewIDs().Append(nil)), string(NewIDs().Append(nil))
	if a[:16] == b[:16] {
		t.Fatalf("two generators share the prefix %s", a[:16])
	}
	// Append appends.
	if got := string(g.Append([]byte("id="))); len(got) != 35 || got[:3] != "id=" || !hex32.MatchString(got[3:]) {
		t.Fatalf("Append to a prefix = %q", got)
	}
}

func TestAllocs(t *testing.T) {
	tr := trusted("10.0.0.0/8")
	proxy := NewClient(&net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 1}, false, tr)
	in := []byte("203.0.113.1, 198.51.100.7")
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(1000, func() { buf = proxy.AppendXFF(buf[:0], in) }); n != 0 {
		t.Errorf("AppendXFF allocates %.1f times, want 0", n)
	}
	g := NewIDs()
	if n := testing.AllocsPerRun(1000, func() { buf = g.Append(buf[:0]) }); n != 0 {
		t.Errorf("IDs.Append allocates %.1f times, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { tr.Contains(proxy.Addr) }); n != 0 {
		t.Errorf("Contains allocates %.1f times, want 0", n)
	}
}
