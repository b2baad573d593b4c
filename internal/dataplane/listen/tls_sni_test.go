package listen

import (
	"path/filepath"
	"strings"
	"testing"
)

// writeNamedPair writes p as NAME.pem and NAME.key in dir.
func writeNamedPair(t *testing.T, dir, name string, p testPair) CertPair {
	t.Helper()
	cp := CertPair{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+".key")}
	writeFile(t, cp.CertFile, p.certPEM)
	writeFile(t, cp.KeyFile, p.keyPEM)
	return cp
}

// servedFor completes a handshake with serverName as SNI ("" sends none)
// and returns the serial of the certificate the server presented. It does
// not verify: names outside a certificate get the default on purpose.
func servedFor(t *testing.T, addr, serverName string) string {
	t.Helper()
	cfg := clientConfig()
	cfg.ServerName = serverName
	cfg.InsecureSkipVerify = true
	return servedSerial(dialTLS(t, addr, cfg))
}

func TestSNIChoosesFileCertificates(t *testing.T) {
	dir := t.TempDir()
	def := newTestPair(t, "default.example.net")
	wild := newTestPair(t, "*.example.org")
	exact := newTestPair(t, "www.example.org", "api.example.org")
	// A later pair naming a host an earlier one has does not take it.
	shadow := newTestPair(t, "www.example.org", "only.example.com")
	cs, err := NewCertSource(CertOptions{
		CertFile: writeNamedPair(t, dir, "def", def).CertFile, KeyFile: filepath.Join(dir, "def.key"),
		Pairs: []CertPair{
			writeNamedPair(t, dir, "wild", wild),
			writeNamedPair(t, dir, "exact", exact),
			writeNamedPair(t, dir, "shadow", shadow),
		},
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, cs.TLSConfig())
	cases := []struct {
		sni  string
		want testPair
	}{
		{"www.example.org", exact},   // exact beats the wildcard
		{"API.Example.org.", exact},  // case and the absolute form do not matter
		{"shop.example.org", wild},   // one label under the wildcard
		{"only.example.com", shadow}, // the later pair still serves its other names
		{"default.example.net", def}, // the default by its name
		{"a.b.example.org", def},     // a wildcard covers one label only
		{"example.org", def},         // nor the bare domain
		{"unknown.example.edu", def}, // unknown names get the first pair
		{"", def},                    // so do clients without SNI
	}
	for _, tc := range cases {
		sni := tc.sni
		if got := servedFor(t, addr, sni); got != tc.want.leaf.SerialNumber.String() {
			t.Errorf("SNI %q: served serial %s, want %s (%v)", tc.sni, got, tc.want.leaf.SerialNumber, tc.want.leaf.DNSNames)
		}
	}
	// The lookup itself, with the spelling clients really send.
	if c, ok := cs.cur.Load().lookup("API.Example.org."); !ok || c.Leaf.SerialNumber.Cmp(exact.leaf.SerialNumber) != 0 {
		t.Errorf("lookup of API.Example.org. = %v, %v", c.Leaf.DNSNames, ok)
	}
}

func TestSNIReloadReadsFilesAndNewList(t *testing.T) {
	dir := t.TempDir()
	def := newTestPair(t, "a.example.com")
	b1 := newTestPair(t, "b.example.com")
	pa, pb := writeNamedPair(t, dir, "a", def), writeNamedPair(t, dir, "b", b1)
	cs, err := NewCertSource(CertOptions{Pairs: []CertPair{pa, pb}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, cs.TLSConfig())
	b2 := newTestPair(t, "b.example.com")
	writeNamedPair(t, dir, "b", b2)
	if err := cs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedFor(t, addr, "b.example.com"); got != b2.leaf.SerialNumber.String() {
		t.Errorf("after reload b.example.com served %s, want the new pair %s", got, b2.leaf.SerialNumber)
	}

	// A reloaded configuration adds a pair.
	c := newTestPair(t, "*.c.example.com")
	pc := writeNamedPair(t, dir, "c", c)
	if err := cs.ReloadFiles("", "", []CertPair{pa, pb, pc}); err != nil {
		t.Fatal(err)
	}
	if got := servedFor(t, addr, "x.c.example.com"); got != c.leaf.SerialNumber.String() {
		t.Errorf("added wildcard pair not served: got %s", got)
	}

	// A broken pair in the new list keeps the whole current set, and the
	// error names the entry.
	writeFile(t, pc.KeyFile, def.keyPEM)
	err = cs.ReloadFiles("", "", []CertPair{pa, pb, pc})
	if err == nil || !strings.Contains(err.Error(), "tls.certificates[2].key") || !strings.Contains(err.Error(), "still serving the previous") {
		t.Fatalf("reload with a mismatched key: err = %v", err)
	}
	if got := servedFor(t, addr, "x.c.example.com"); got != c.leaf.SerialNumber.String() {
		t.Errorf("after a refused reload x.c.example.com served %s, want the previous %s", got, c.leaf.SerialNumber)
	}
	st := cs.Status()
	if len(st) != 3 || st[2].Host != "*.c.example.com" || st[0].Source != "file" || st[0].State != CertValid {
		t.Errorf("status = %+v", st)
	}
}
