package serve

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// NotifySocketEnv is the variable systemd sets for Type=notify services.
const NotifySocketEnv = "NOTIFY_SOCKET"

// sdNotify sends state lines to systemd's notification socket, when
// $NOTIFY_SOCKET names one (otherwise it does nothing). cutover sends
// READY=1 once it serves, STOPPING=1 when it shuts down, and, from the new
// process of an upgrade, MAINPID=<its pid> with READY=1: systemd then follows
// the new process as the service's main process when the old one exits
// (examples/systemd/cutover.service has NotifyAccess=all for that message).
//
// Hand-written rather than a dependency: the protocol is one datagram on a
// Unix socket ("@" at the start of the path means the abstract namespace).
func sdNotify(lookupEnv func(string) (string, bool), lines ...string) error {
	path, ok := lookupEnv(NotifySocketEnv)
	if !ok || path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", strings.TrimPrefix(path, "\x00"), err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// mainPIDLines are what the new process of an upgrade tells systemd.
func mainPIDLines() []string {
	return []string{fmt.Sprintf("MAINPID=%d", os.Getpid()), "READY=1"}
}
