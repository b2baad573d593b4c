package proxy_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func TestForwardsToActivePool(t *testing.T) {
	b1 := newBackend(t, "blue-1", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b1}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	c := strictClient()
	for i := 0; i < 3; i++ {
		resp, err := c.Get("http://" + ps.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "blue-1" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	_ = http.StatusOK
}
