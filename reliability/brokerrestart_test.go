//go:build reliability

package reliability

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	convert "mp3converter/functions/convert"
)

// RabbitMQ drops the stack's connections three times during a run of 50
// uploads (`rabbitmqctl close_connection` on the stack's own connections,
// found by their connection_name, which carries the broker prefix: other
// users of this machine's RabbitMQ keep theirs, unlike close_all_connections
// or stop_app/start_app). What was unacked is redelivered, the stack
// reconnects by itself, and nothing is lost or sent twice.
func TestBrokerConnectionsDropped(t *testing.T) {
	r := record(t, "broker: RabbitMQ closes the stack's connections 3 times during 50 uploads")
	if os.Getenv("RABBITMQ_URL") == "" {
		t.Skip("RABBITMQ_URL is not set")
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl is not installed here")
	}
	const uploads = 50
	closeAt := []int{10, 25, 40} // emails received before each drop

	convertFn, notifyFn := watch(convert.New()), newWatchedNotify()
	s := newSystem(t, sysOptions{rabbit: true, instances: map[string]any{"convert": convertFn, "notify": notifyFn}})
	b := s.uploadBatch(s.AdminToken, clip(t, 20), "drop", uploads, 4)
	for i, at := range closeAt {
		for deadline := time.Now().Add(3 * time.Minute); s.readyCount(b.fidsSoFar()) < at; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d emails within 3 minutes", at)
			}
		}
		closed := closeConnections(t, s.BrokerPrefix)
		dropped := time.Now()
		r.Runs++
		// The stack reconnects by itself: its connection is back.
		for deadline := dropped.Add(time.Minute); len(connections(t, s.BrokerPrefix)) == 0; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				r.Failures++
				t.Fatalf("drop %d: no connection again within a minute", i+1)
			}
		}
		r.figure("drop %d after %d emails: %d connection(s) closed, back after %s", i+1, at, closed,
			time.Since(dropped).Round(100*time.Millisecond))
	}
	fids := b.wait(t, 5*time.Minute)
	s.settle(fids, 5*time.Minute)
	r.Runs += len(fids)
	s.Stack.Stack.Close()
	s.audit(t, r, fids)
	s.auditQueues(t, r)
	if len(fids) != uploads {
		r.Lost += uploads - len(fids)
		t.Errorf("%d of %d uploads accepted (%s)", len(fids), uploads, b.summary())
	}
	r.figure("uploads: %s; convert attempts: %s; deliveries for %d videos: %d to convert, %d to notify (redeliveries, deduplicated)",
		b.summary(), s.attemptsSummary(t), len(fids), convertFn.count(), notifyFn.total())
}

// connections lists the pids of the RabbitMQ connections whose client
// properties mention prefix (the stack names its connection after its exchange).
func connections(t testing.TB, prefix string) []string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v\n%s", err, out)
	}
	var pids []string
	for _, line := range strings.Split(string(out), "\n") {
		if pid, props, ok := strings.Cut(line, "\t"); ok && strings.Contains(props, prefix) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// closeConnections closes the stack's connections and returns how many.
func closeConnections(t testing.TB, prefix string) int {
	t.Helper()
	pids := connections(t, prefix)
	for _, pid := range pids {
		if out, err := exec.Command("rabbitmqctl", "-q", "close_connection", pid, "mp3converter reliability test").CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl close_connection %s: %v\n%s", pid, err, out)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no RabbitMQ connection of the stack (prefix %s)", prefix)
	}
	return len(pids)
}
