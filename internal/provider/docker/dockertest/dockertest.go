// Package dockertest helps tests run cutover's parts on the real Docker
// Engine: it skips when no engine answers, builds static binaries and
// images FROM scratch (nothing is pulled), and creates networks and
// containers under a unique name prefix. Everything it creates is removed
// when the test ends, also when it fails.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"

	"github.com/cutover/cutover/internal/provider/docker"
)

// cleanupTimeout bounds the removal of what a test created.
const cleanupTimeout = 60 * time.Second

// Engine connects to the engine DOCKER_HOST names (default: the local
// socket), or skips the test saying why.
func Engine(t testing.TB) *docker.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng, err := docker.Connect(ctx, "")
	if err != nil {
		t.Skipf("skipping: this test needs a Docker Engine and none answers: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// Prefix returns a name prefix unique to this run, e.g. "cutover-t-1a2b3c4d".
func Prefix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "cutover-t-" + hex.EncodeToString(b)
}

// ModuleRoot is the folder of cutover's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's folder")
		}
		dir = parent
	}
}

// GoBinary builds the command package pkg (e.g. "./cmd/demo-app") as a
// static binary (CGO_ENABLED=0) into dir and returns its path.
func GoBinary(t testing.TB, pkg, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = ModuleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// ImageOptions describe an image to build.
type ImageOptions struct {
	// Dockerfile is the path of the Dockerfile.
	Dockerfile string
	// Files are put in the build context: name in the context → path.
	Files map[string]string
	// Tag names the image (repository:tag).
	Tag string
	// Args are build arguments.
	Args map[string]string
}

// Image builds an image with the engine's classic builder (FROM scratch
// needs no pull) and removes it, with its untagged parents, when the test
// ends.
func Image(t testing.TB, eng *docker.Engine, o ImageOptions) {
	t.Helper()
	buildCtx, err := contextTar(o)
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]*string{}
	for k, v := range o.Args {
		args[k] = &v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_, err := eng.Client().ImageRemove(ctx, o.Tag, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !strings.Contains(err.Error(), "No such image") {
			t.Errorf("remove image %s: %v", o.Tag, err)
		}
	})
	resp, err := eng.Client().ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags: []string{o.Tag}, Dockerfile: "Dockerfile", BuildArgs: args,
		Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		t.Fatalf("build image %s: %v", o.Tag, err)
	}
	defer resp.Body.Close()
	var log strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("build image %s: read the build output: %v\n%s", o.Tag, err, log.String())
		}
		log.WriteString(m.Stream)
		if m.Error != "" {
			t.Fatalf("build image %s: %s\n%s", o.Tag, m.Error, log.String())
		}
	}
}

func contextTar(o ImageOptions) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name, path string, mode int64) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	}
	if err := add("Dockerfile", o.Dockerfile, 0o644); err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	for name, path := range o.Files {
		if err := add(name, path, 0o755); err != nil {
			return nil, fmt.Errorf("build context: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

// Network creates a bridge network, removed when the test ends (after
// the containers created later, as cleanups run last-in first-out).
func Network(t testing.TB, eng *docker.Engine, name string) docker.Network {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := eng.Client().NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge"})
	if err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := eng.Client().NetworkRemove(ctx, resp.ID); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("remove network %s: %v", name, err)
		}
	})
	return docker.Network{ID: resp.ID, Name: name}
}

// RunOptions describe a container to start.
type RunOptions struct {
	Name    string
	Image   string
	Cmd     []string
	Env     []string
	Labels  map[string]string
	Network string
	// Binds are host:container[:ro] mounts.
	Binds []string
	// Publish are container TCP ports published on a random 127.0.0.1 port.
	Publish []int
}

// Run creates and starts a container, removed (with its anonymous
// volumes) when the test ends.
func Run(t testing.TB, eng *docker.Engine, o RunOptions) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := &container.Config{Image: o.Image, Cmd: o.Cmd, Env: o.Env, Labels: o.Labels, ExposedPorts: nat.PortSet{}}
	hc := &container.HostConfig{Binds: o.Binds, PortBindings: nat.PortMap{}}
	for _, p := range o.Publish {
		port := nat.Port(fmt.Sprintf("%d/tcp", p))
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = []nat.PortBinding{{HostIP: "127.0.0.1", HostPort: ""}}
	}
	var nc *network.NetworkingConfig
	if o.Network != "" {
		hc.NetworkMode = container.NetworkMode(o.Network)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{o.Network: {}}}
	}
	resp, err := eng.Client().ContainerCreate(ctx, cfg, hc, nc, nil, o.Name)
	if err != nil {
		t.Fatalf("create container %s: %v", o.Name, err)
	}
	RemoveAtEnd(t, eng, resp.ID)
	if err := eng.Client().ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", o.Name, err)
	}
	return resp.ID
}

// RemoveAtEnd removes a container when the test ends.
func RemoveAtEnd(t testing.TB, eng *docker.Engine, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		err := eng.Client().ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !strings.Contains(err.Error(), "No such container") && !strings.Contains(err.Error(), "is already in progress") {
			t.Errorf("remove container %s: %v", id, err)
		}
	})
}

// RemoveLabelledAtEnd removes, when the test ends, every container that
// carries the label (key=value) — e.g. those docker compose made for a
// project.
func RemoveLabelledAtEnd(t testing.TB, eng *docker.Engine, label string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		list, err := eng.Client().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", label))})
		if err != nil {
			t.Errorf("list containers labelled %s: %v", label, err)
			return
		}
		for _, c := range list {
			err := eng.Client().ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && !strings.Contains(err.Error(), "No such container") && !strings.Contains(err.Error(), "is already in progress") {
				t.Errorf("remove container %s: %v", c.ID, err)
			}
		}
	})
}

// PublishedPort is the 127.0.0.1 host port a container port is published on.
func PublishedPort(t testing.TB, eng *docker.Engine, id string, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := eng.Client().ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range r.NetworkSettings.Ports[nat.Port(fmt.Sprintf("%d/tcp", port))] {
		if b.HostIP == "127.0.0.1" {
			return "127.0.0.1:" + b.HostPort
		}
	}
	t.Fatalf("container %s: port %d is not published on 127.0.0.1", id, port)
	return ""
}

// Eventually polls cond every 20ms until it returns "" (done) or the
// deadline passes, then fails with cond's last message. For states the
// engine announces by no signal a test can wait on.
func Eventually(t testing.TB, within time.Duration, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		msg := cond()
		if msg == "" {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
