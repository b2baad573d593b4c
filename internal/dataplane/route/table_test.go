package route

import (
	"strings"
	"testing"
)

func lookupName(tb *Table, host string) string {
	s := tb.Lookup([]byte(host))
	if s == nil {
		return "<nil>"
	}
	return s.Name()
}

func TestLookup(t *testing.T) {
	tb := NewTable()
	tb.Add(NewService("site"), []string{"example.com", "WWW.Example.com."})
	tb.Add(NewService("wild"), []string{"*.example.com"})
	tb.Add(NewService("deep"), []string{"*.b.example.com"})
	tb.Add(NewService("api"), []string{"api.b.example.com"})
	tb.Add(NewService("v6"), []string{"[::1]", "[FD00::A]"})
	tb.Add(NewService("fallback"), nil)

	cases := map[string]string{
		"example.com":          "site",
		"EXAMPLE.COM":          "site",
		"Example.Com:8080":     "site",
		"example.com.":         "site", // absolute form
		"example.com.:443":     "site",
		"example.com:":         "site", // empty port
		"www.example.com":      "site", // configured with upper case and a trailing dot
		"a.example.com":        "wild",
		"A.Example.COM:80":     "wild",
		"x.y.example.com":      "wild",
		"b.example.com":        "wild", // *.b.example.com needs a label before b
		"x.b.example.com":      "deep", // the longest wildcard wins
		"x.y.b.example.com":    "deep",
		"api.b.example.com":    "api", // exact beats any wildcard
		"api.b.example.com.":   "api",
		"[::1]":                "v6",
		"[::1]:8080":           "v6",
		"[fd00::a]:8443":       "v6",
		"[::2]:8080":           "fallback",
		"[::1":                 "fallback", // unterminated literal
		"example.org":          "fallback",
		"notexample.com":       "fallback", // a suffix that is not a label boundary
		"com":                  "fallback",
		"":                     "fallback",
		"example.com:80:80":    "fallback",
		"127.0.0.1:8080":       "fallback",
		"example.com:http":     "fallback", // not a port: part of the name
		"xexample.com.evil.io": "fallback",
	}
	for host, want := range cases {
		if got := lookupName(tb, host); got != want {
			t.Errorf("Lookup(%q) = %s, want %s", host, got, want)
		}
	}
}

func TestLookupNoDefault(t *testing.T) {
	tb := NewTable()
	if s := tb.Lookup([]byte("example.com")); s != nil {
		t.Fatalf("empty table: Lookup = %s, want nil", s.Name())
	}
	tb.Add(NewService("site"), []string{"example.com"})
	if got := lookupName(tb, "example.org"); got != "<nil>" {
		t.Fatalf("Lookup(example.org) = %s, want nil", got)
	}
	if got := lookupName(tb, "example.com"); got != "site" {
		t.Fatalf("Lookup(example.com) = %s, want site", got)
	}
}

// Host names up to 256 bytes are looked up; longer ones (longer than any
// DNS name) go to the default service.
func TestLookupLongHosts(t *testing.T) {
	label := strings.Repeat("a", 60)
	name256 := strings.Join([]string{label, label, label, label}, ".") // 243 bytes
	name256 += "." + strings.Repeat("b", 256-len(name256)-1)
	if len(name256) != 256 {
		t.Fatalf("test name is %d bytes", len(name256))
	}
	name300 := strings.Repeat("c", 290) + ".long.test"
	tb := NewTable()
	tb.Add(NewService("exact256"), []string{name256})
	tb.Add(NewService("exact300"), []string{name300})
	tb.Add(NewService("wild"), []string{"*.long.test"})
	tb.Add(NewService("fallback"), nil)

	if got := lookupName(tb, strings.ToUpper(name256)+":8080"); got != "exact256" {
		t.Errorf("Lookup(256-byte name) = %s, want exact256", got)
	}
	if got := lookupName(tb, name256+"."); got != "exact256" {
		t.Errorf("Lookup(256-byte name with a trailing dot) = %s, want exact256", got)
	}
	if got := lookupName(tb, name300); got != "fallback" {
		t.Errorf("Lookup(300-byte name) = %s, want the default service", got)
	}
	if got := lookupName(tb, strings.Repeat("x.", 2000)+"long.test"); got != "fallback" {
		t.Errorf("Lookup(4009-byte name) = %s, want the default service", got)
	}
}

func TestTableServices(t *testing.T) {
	a, b, c := NewService("a"), NewService("b"), NewService("c")
	tb := NewTable()
	tb.Add(b, []string{"b.test"})
	tb.Add(a, nil)
	tb.Add(c, []string{"c.test", "*.c.test"})
	got := tb.Services()
	if len(got) != 3 || got[0] != b || got[1] != a || got[2] != c {
		t.Fatalf("Services = %v, want b, a, c in the order added", got)
	}
	if s, ok := tb.Service("c"); !ok || s != c {
		t.Fatalf("Service(c) = %v, %v", s, ok)
	}
	if _, ok := tb.Service("d"); ok {
		t.Fatal("Service(d) found a service that was never added")
	}
}

func TestRouterSwap(t *testing.T) {
	t1, t2 := NewTable(), NewTable()
	t1.Add(NewService("one"), nil)
	t2.Add(NewService("two"), nil)
	r := NewRouter(t1)
	if r.Table() != t1 {
		t.Fatal("Table is not the table the router was made with")
	}
	if old := r.Swap(t2); old != t1 || r.Table() != t2 {
		t.Fatal("Swap did not install the new table and return the old one")
	}
	if got := lookupName(r.Table(), "x"); got != "two" {
		t.Fatalf("lookup after swap = %s, want two", got)
	}
}

func TestLookupAllocs(t *testing.T) {
	tb := NewTable()
	tb.Add(NewService("site"), []string{"example.com"})
	tb.Add(NewService("wild"), []string{"*.example.com"})
	tb.Add(NewService("fallback"), nil)
	for _, host := range []string{"Example.COM:8080", "a.b.example.com.", "[::1]:80", "other.test", strings.Repeat("x", 300)} {
		h := []byte(host)
		if n := testing.AllocsPerRun(1000, func() { tb.Lookup(h) }); n != 0 {
			t.Errorf("Lookup(%.20q) allocates %.1f times, want 0", host, n)
		}
	}
}
