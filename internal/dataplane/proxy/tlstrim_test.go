package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
	"unsafe"
)

// TestTLSTrimFindsCryptoTLSBuffers: the crypto/tls fields a parked
// connection drops are found; after a Go upgrade that renames them this
// fails, instead of parked connections silently holding them again.
func TestTLSTrimFindsCryptoTLSBuffers(t *testing.T) {
	if !newTLSTrim().ok {
		t.Fatal("crypto/tls.Conn has no rawInput and hand bytes.Buffer or input bytes.Reader any more: parked TLS connections keep their input buffers; update tlstrim.go")
	}
}

// TestTLSTrimDropsEmptyBuffersOnly: trimming a connection between
// records frees its input buffers and it reads and writes on as before;
// one holding plaintext not read yet keeps it.
func TestTLSTrimDropsEmptyBuffersOnly(t *testing.T) {
	k := newTLSTrim()
	srv, cli := tlsPair(t)
	caps := func() (raw, in, hand int) {
		base := unsafe.Pointer(srv)
		return (*bytes.Buffer)(unsafe.Add(base, k.rawInput)).Cap(),
			int((*bytes.Reader)(unsafe.Add(base, k.input)).Size()),
			(*bytes.Buffer)(unsafe.Add(base, k.hand)).Cap()
	}
	exchange := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(cli, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(srv, got); err != nil || string(got) != msg {
			t.Fatalf("server read %q, %v; want %q", got, err, msg)
		}
		if _, err := srv.Write(got); err != nil {
			t.Fatal(err)
		}
		back := make([]byte, len(msg))
		if _, err := io.ReadFull(cli, back); err != nil || string(back) != msg {
			t.Fatalf("client read %q, %v; want %q", back, err, msg)
		}
	}
	exchange("first")
	if raw, _, hand := caps(); raw == 0 || hand == 0 {
		t.Fatalf("before trimming: rawInput cap %d, hand cap %d; the test expects crypto/tls to keep both", raw, hand)
	}
	k.trim(srv)
	if raw, in, hand := caps(); raw != 0 || in != 0 || hand != 0 {
		t.Fatalf("after trimming: rawInput cap %d, input over %d bytes, hand cap %d; want all 0", raw, in, hand)
	}
	exchange("second, after trimming")

	// Plaintext the server has not read yet survives a trim.
	io.WriteString(cli, "0123456789")
	b := make([]byte, 4)
	if _, err := io.ReadFull(srv, b); err != nil {
		t.Fatal(err)
	}
	k.trim(srv)
	rest := make([]byte, 6)
	if _, err := io.ReadFull(srv, rest); err != nil || string(rest) != "456789" {
		t.Fatalf("after trimming with plaintext unread: %q, %v; want 456789", rest, err)
	}
}

// tlsPair is a handshaken TLS 1.3 server and client over loopback TCP.
func tlsPair(t *testing.T) (srv, cli *tls.Conn) {
	t.Helper()
	return tlsPairOver(t, func(nc net.Conn) net.Conn { return nc })
}

// tlsPairOver is tlsPair with the server's crypto/tls over wrap(its TCP
// connection).
func tlsPairOver(t *testing.T, wrap func(net.Conn) net.Conn) (srv, cli *tls.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		tc := tls.Server(wrap(nc), &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			nc.Close()
			accepted <- nil
			return
		}
		accepted <- tc
	}()
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	d := &net.Dialer{Timeout: 10 * time.Second}
	cli, err = tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	srv = <-accepted
	if srv == nil {
		t.Fatal("the server's accept or handshake failed")
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	deadline := time.Now().Add(10 * time.Second)
	srv.SetDeadline(deadline)
	cli.SetDeadline(deadline)
	return srv, cli
}
