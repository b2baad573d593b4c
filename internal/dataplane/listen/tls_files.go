package listen

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// loadPair reads a PEM certificate chain and its private key. Every error
// names the file, what is wrong with it and how to fix it, because this is
// the message an operator sees when `cutover serve` refuses to start or a
// SIGHUP reload is refused.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	return loadPairAs(certFile, keyFile, "tls.cert", "tls.key")
}

// loadPairAs is loadPair for a pair that its messages call certSetting and
// keySetting (e.g. "tls.certificates[1].cert").
func loadPairAs(certFile, keyFile, certSetting, keySetting string) (*tls.Certificate, error) {
	certPEM, err := readPEMFile(certFile, certSetting)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEMFile(keyFile, keySetting)
	if err != nil {
		return nil, err
	}

	certDER, err := certificateBlocks(certPEM, certFile, certSetting)
	if err != nil {
		return nil, err
	}
	key, err := privateKey(keyPEM, keyFile, keySetting)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(certDER[0])
	if err != nil {
		return nil, fmt.Errorf("%s %q: the first certificate cannot be parsed: %w; "+
			"check the file with `openssl x509 -in %s -noout -text`", certSetting, certFile, err, certFile)
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		for _, der := range certDER[1:] {
			if c, err := x509.ParseCertificate(der); err == nil && publicKeysEqual(c.PublicKey, key.Public()) {
				return nil, fmt.Errorf("%s %q: the key in %q belongs to a later certificate in the file, "+
					"not the first: put the server certificate first, then its intermediates", certSetting, certFile, keyFile)
			}
		}
		return nil, fmt.Errorf("%s %q does not match the certificate in %s %q: "+
			"use the private key the certificate was issued for (the pair from the same issuance or renewal)",
			keySetting, keyFile, certSetting, certFile)
	}

	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s %q and %s %q cannot be used together: %w", certSetting, certFile, keySetting, keyFile, err)
	}
	cert.Leaf = leaf
	return &cert, nil
}

// readPEMFile reads one of the pair's files, turning the usual failures
// into messages that say which setting points where and what to do.
func readPEMFile(path, setting string) ([]byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s %q does not exist: point %s at the PEM file, or use tls.self_signed: true: %w",
			setting, path, setting, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s %q is not readable by this user: grant read access "+
			"(e.g. chgrp the file to cutover's group and chmod 640): %w", setting, path, err)
	case err != nil:
		return nil, fmt.Errorf("%s %q cannot be read: %w", setting, path, err)
	case len(bytes.TrimSpace(data)) == 0:
		return nil, fmt.Errorf("%s %q is empty: point %s at the PEM file", setting, path, setting)
	}
	return data, nil
}

// certificateBlocks returns the DER of every CERTIFICATE block, in order.
func certificateBlocks(data []byte, path, setting string) ([][]byte, error) {
	var ders [][]byte
	sawKey := false
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			ders = append(ders, b.Bytes)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			sawKey = true
		}
	}
	switch {
	case len(ders) > 0:
		return ders, nil
	case sawKey:
		return nil, fmt.Errorf("%s %q holds a private key, not a certificate: "+
			"are the cert and key files swapped?", setting, path)
	default:
		return nil, fmt.Errorf("%s %q is not a PEM certificate (no \"-----BEGIN CERTIFICATE-----\" block): "+
			"use the PEM file (e.g. fullchain.pem); a DER file converts with "+
			"`openssl x509 -inform der -in %s -out cert.pem`", setting, path, path)
	}
}

// privateKey returns the first private key in data.
func privateKey(data []byte, path, setting string) (crypto.Signer, error) {
	sawCert := false
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			sawCert = true
			continue
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("%s %q is protected by a passphrase, which cutover cannot ask for: "+
				"store it decrypted with `openssl pkey -in %s -out key.pem` and restrict the file to mode 0600",
				setting, path, path)
		}
		key, err := parseKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s %q: the %s block cannot be parsed: %w", setting, path, b.Type, err)
		}
		return key, nil
	}
	if sawCert {
		return nil, fmt.Errorf("%s %q holds a certificate, not a private key: "+
			"are the cert and key files swapped?", setting, path)
	}
	return nil, fmt.Errorf("%s %q is not a PEM private key (no \"-----BEGIN ... PRIVATE KEY-----\" block): "+
		"use the PEM key file (e.g. privkey.pem)", setting, path)
}

func parseKey(b *pem.Block) (crypto.Signer, error) {
	var key any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
