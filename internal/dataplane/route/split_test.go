package route

import (
	"fmt"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// TestSplitWeightsAreExactOverManyClients: 10,000 distinct cookie-less
// clients at each weight land on the canary in that share, within 1.5
// points; a client given the canary keeps it when the weight grows.
func TestSplitWeightsAreExactOverManyClients(t *testing.T) {
	stable, canary := upstream.NewPool("blue", upstream.RoundRobin), upstream.NewPool("green", upstream.RoundRobin)
	const clients = 10000
	prev := map[int]bool{}
	for _, pct := range []uint32{1, 10, 50, 90} {
		n := 0
		for i := 0; i < clients; i++ {
			ip := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
			s := split(stable, canary, pct*WeightScale/100, SplitKey{Client: []byte(ip)})
			if !s.SetCookie {
				t.Fatal("a client without a cookie was not told its pool")
			}
			if s.Pool == canary {
				n++
				prev[i] = true
			} else if prev[i] {
				t.Fatalf("client %s had the canary at a lower weight and lost it at %d%%", ip, pct)
			}
		}
		share := 100 * float64(n) / clients
		if share < float64(pct)-1.5 || share > float64(pct)+1.5 {
			t.Errorf("weight %d%%: %.2f%% of %d clients got the canary", pct, share, clients)
		}
	}
}

func TestSplitHonoursTheCookie(t *testing.T) {
	stable, canary := upstream.NewPool("blue", upstream.RoundRobin), upstream.NewPool("green", upstream.RoundRobin)
	for _, c := range []struct {
		cookie string
		want   *upstream.Pool
		set    bool
	}{{"green", canary, false}, {"blue", stable, false}} {
		// Weight 0 and 100%: the cookie wins either way.
		for _, w := range []uint32{0, WeightScale} {
			s := split(stable, canary, w, SplitKey{Cookie: []byte(c.cookie), Client: []byte("10.0.0.1")})
			if s.Pool != c.want || s.SetCookie != c.set {
				t.Errorf("cookie %q weight %d: %s set=%v", c.cookie, w, s.Pool.Name(), s.SetCookie)
			}
		}
	}
	// A cookie naming a pool that left the split is ignored and replaced.
	s := split(stable, canary, WeightScale, SplitKey{Cookie: []byte("red"), Client: []byte("10.0.0.1")})
	if s.Pool != canary || !s.SetCookie {
		t.Errorf("stale cookie: %s set=%v", s.Pool.Name(), s.SetCookie)
	}
}

func TestCookieValue(t *testing.T) {
	name := []byte("cutover_web")
	for h, want := range map[string]string{
		"cutover_web=green":                    "green",
		"a=1; cutover_web=blue; b=2":           "blue",
		"a=1;cutover_web=blue":                 "blue",
		"cutover_webx=green; cutover_web=blue": "blue",
		"a=1":                                  "",
		"":                                     "",
		"cutover_web":                          "",
	} {
		if got := string(CookieValue([]byte(h), name)); got != want {
			t.Errorf("CookieValue(%q) = %q, want %q", h, got, want)
		}
	}
}
