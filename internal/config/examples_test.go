package config

import (
	"os"
	"path/filepath"
	"testing"
)

// The seed example's configurations, with and without certificates from
// ACME or files, stay valid as the configuration grows.
func TestSeedExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../../examples/seed/cutover*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("example configurations: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(data, "/etc/cutover/"+filepath.Base(f), env(map[string]string{"NGINX_HOST": "shop.example.com"}))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		switch filepath.Base(f) {
		case "cutover-acme.yaml":
			if hs := c.ACMEHosts(); len(hs) != 1 || hs[0] != "shop.example.com" || c.TLS.ACME.Challenge != ChallengeHTTP01 {
				t.Errorf("%s: acme = %+v, hosts %v", f, c.TLS.ACME, hs)
			}
		case "cutover-certfiles.yaml":
			if len(c.TLS.Certificates) != 2 || c.TLS.Certificates[0].Cert != "/etc/letsencrypt/live/shop.example.com/fullchain.pem" {
				t.Errorf("%s: certificates = %+v", f, c.TLS.Certificates)
			}
		}
	}
}
