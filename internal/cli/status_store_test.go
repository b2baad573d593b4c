package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
)

func TestStatusPrintsSharedStore(t *testing.T) {
	var out strings.Builder
	printStatus(&out, &admin.StatusResponse{Store: &admin.StoreStatus{
		Kind: admin.StoreEtcd, Where: "etcd http://10.0.0.5:2379 (prefix /cutover/)", Instance: "edge-1",
		Stale: true, Problem: "etcd http://10.0.0.5:2379 (prefix /cutover/) cannot be reached: context deadline exceeded",
		Applied: 40, Latest: 42,
		Instances: []admin.InstanceStatus{
			{Name: "edge-1", Applied: 40, Self: true, Stale: true},
			{Name: "edge-2", Applied: 42},
			{Name: "edge-3", Applied: 38, Behind: 2},
		},
	}}, time.Now())
	got := out.String()
	for _, want := range []string{
		"this instance: edge-1, applied revision 40, newest 42",
		"STALE: etcd http://10.0.0.5:2379 (prefix /cutover/) cannot be reached",
		"edge-1 (this one)  40       unknown (stale)",
		"edge-2             42       up to date",
		"edge-3             38       2 service changes",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	out.Reset()
	printStatus(&out, &admin.StatusResponse{}, time.Now())
	if strings.Contains(out.String(), "shared state") {
		t.Errorf("status without a shared store mentions one:\n%s", out.String())
	}
}
