package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestStoreEtcd(t *testing.T) {
	c := mustParse(t, base+`store:
  etcd:
    endpoints: ["https://10.0.0.5:2379", "https://10.0.0.6:2379"]
    cert: certs/client.pem
    key: /etc/etcd/client.key
    ca: certs/ca.pem
    username: cutover
    password: "${PW}"
instance: edge-1
`, map[string]string{"PW": "secret"})
	want := &Etcd{
		Endpoints: []string{"https://10.0.0.5:2379", "https://10.0.0.6:2379"},
		Prefix:    DefaultEtcdPrefix,
		Cert:      "/etc/cutover/certs/client.pem", Key: "/etc/etcd/client.key", CA: "/etc/cutover/certs/ca.pem",
		Username: "cutover", Password: "secret",
	}
	if c.Store == nil || !reflect.DeepEqual(c.Store.Etcd, want) {
		t.Errorf("store.etcd = %+v, want %+v", c.Store, want)
	}
	if c.Instance != "edge-1" {
		t.Errorf("instance = %q, want edge-1", c.Instance)
	}

	plain := mustParse(t, base, nil)
	if plain.Store != nil {
		t.Errorf("without store: Store = %+v, want nil (the state file)", plain.Store)
	}
	if plain.Instance != DefaultInstance() || plain.Instance == "" {
		t.Errorf("instance defaults to %q, want the host name %q", plain.Instance, DefaultInstance())
	}
}

func TestStoreProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		line int
		key  string
		msg  []string
	}{
		{"empty store", base + "store: {}\n", 6, "store", []string{"names no store", "endpoints"}},
		{"no endpoints", base + "store: {etcd: {prefix: /x/}}\n", 6, "store.etcd.endpoints", []string{"is empty", "https://10.0.0.5:2379"}},
		{"bad endpoint", base + "store:\n  etcd:\n    endpoints: [\"10.0.0.5:2379\"]\n", 8, "store.etcd.endpoints[0]", []string{"not an etcd client URL", "scheme://host:port"}},
		{"endpoint twice", base + "store:\n  etcd:\n    endpoints:\n      - http://127.0.0.1:2379\n      - http://127.0.0.1:2379\n", 10, "store.etcd.endpoints[1]", []string{"listed twice", "remove one"}},
		{"prefix without slash", base + "store:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    prefix: cutover\n", 9, "store.etcd.prefix", []string{"start and end with '/'", "/cutover/"}},
		{"cert without key", base + "store:\n  etcd:\n    endpoints: [\"https://127.0.0.1:2379\"]\n    cert: c.pem\n", 9, "store.etcd.cert", []string{"without store.etcd.key", "private key"}},
		{"http with tls files", base + "store:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    ca: ca.pem\n", 8, "store.etcd.endpoints[0]", []string{"plain http", "https://"}},
		{"user without password", base + "store:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    username: u\n", 9, "store.etcd.username", []string{"without store.etcd.password", "password"}},
		{"unknown store key", base + "store: {consul: {}}\n", 6, "store.consul", []string{"unknown key", "etcd"}},
		{"bad instance", base + "instance: edge/1\n", 6, "instance", []string{"cannot name this cutover", "edge-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := problemsOf(t, tc.text, nil)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(ps), (&Errors{Problems: ps}).Error())
			}
			p := ps[0]
			if p.Line != tc.line || p.Key != tc.key {
				t.Errorf("problem at %d %q, want %d %q: %s", p.Line, p.Key, tc.line, tc.key, p)
			}
			for _, m := range tc.msg {
				if !strings.Contains(p.Msg, m) {
					t.Errorf("message %q lacks %q", p.Msg, m)
				}
			}
		})
	}
}
