package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
)

func TestStatusPrintsCertificatesWithWarnings(t *testing.T) {
	exp := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	var out strings.Builder
	printStatus(&out, &admin.StatusResponse{Certificates: []admin.CertificateStatus{
		{Host: "example.com", Source: "acme", State: "valid", NotAfter: &exp, DaysLeft: 59.54},
		{Host: "new.example.com", Source: "acme", State: "failing", Warning: "no certificate from the CA yet: refused"},
	}}, time.Now())
	text := out.String()
	for _, want := range []string{
		"CERTIFICATE", "example.com", "2027-03-01T12:00:00Z", "59.5",
		"new.example.com", "failing", "WARNING: no certificate from the CA yet: refused",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status output lacks %q:\n%s", want, text)
		}
	}
	if line := lineWith(text, "example.com  "); strings.Contains(line, "WARNING") {
		t.Errorf("a valid certificate has a warning: %q", line)
	}
	out.Reset()
	printStatus(&out, &admin.StatusResponse{}, time.Now())
	if strings.Contains(out.String(), "CERTIFICATE") {
		t.Errorf("no certificates, yet a certificate table:\n%s", out.String())
	}
}

func lineWith(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, s) {
			return l
		}
	}
	return ""
}
