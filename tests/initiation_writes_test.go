package tests_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestInitiationWrites holds an initiation to the keys it needs: the status service's enrollment
// (holding the registry's sealed pending credential) and open index, nothing in the registry
// (it stores a credential only once a code claims it), and no exchange index (status_id =
// ids.StatusIDFor(exchange_id)). Then the relay publishes the initiated event without
// writing the enrollment again.
func TestInitiationWrites(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	token := st.Token(t, "writes@example.com")
	const n = 3
	var statusIDs, exchangeIDs []string
	for range n {
		in := initiate(t, st, token, "?qr=none")
		if want := ids.StatusIDFor(in.ExchangeID.ExchangeID); in.StatusID != want {
			t.Fatalf("status_id %s, want StatusIDFor(exchange_id) = %s", in.StatusID, want)
		}
		statusIDs = append(statusIDs, in.StatusID)
		exchangeIDs = append(exchangeIDs, in.ExchangeID.ExchangeID)
	}
	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys := func(bucket string) map[string][]string {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := kv.Keys(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			t.Fatal(err)
		}
		byPrefix := map[string][]string{}
		for _, k := range ks {
			p, rest, _ := strings.Cut(k, ".")
			byPrefix[p] = append(byPrefix[p], rest)
		}
		return byPrefix
	}
	reg := keys("mfa_devices")
	delete(reg, "_relay") // the relay's checkpoint, written once a second at most
	delete(reg, "_index") // the per-user index marker, written once per bucket at start-up
	if len(reg) != 0 {
		t.Errorf("registry keys %v after initiations: want none", reg)
	}
	stat := keys("mfa_enrollments")
	// The status replica's poll view keeps one marker key of its own (e._view.<replica>,
	// written while polls are served, whatever the number of enrollments): not a write per
	// initiation.
	markers := slices.DeleteFunc(slices.Clone(stat["e"]), func(k string) bool { return !strings.HasPrefix(k, "_view.") })
	if len(markers) > 1 {
		t.Errorf("%d poll-view markers, want at most one per status replica", len(markers))
	}
	stat["e"] = slices.DeleteFunc(stat["e"], func(k string) bool { return strings.HasPrefix(k, "_view.") })
	delete(stat, "_relay")
	if len(stat["e"]) != n || len(stat["o"]) != n || len(stat) != 2 {
		t.Errorf("status keys %v: want %d enrollments and %d open index entries, nothing else", stat, n, n)
	}
	for _, id := range statusIDs {
		if !slices.Contains(stat["e"], id) {
			t.Errorf("no enrollment e.%s", id)
		}
	}
	var createdRevs []uint64
	for _, id := range statusIDs {
		var rec struct {
			Doc struct {
				Pending []byte `json:"pending_credential"`
			} `json:"doc"`
		}
		kv, err := js.KeyValue(ctx, "mfa_enrollments")
		if err != nil {
			t.Fatal(err)
		}
		entry, err := kv.Get(ctx, "e."+id)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(entry.Value(), &rec); err != nil || len(rec.Doc.Pending) == 0 {
			t.Errorf("e.%s holds no sealed pending credential (%v)", id, err)
		}
		createdRevs = append(createdRevs, entry.Revision())
	}
	for _, id := range statusIDs {
		rec.WaitTypes(t, id, events.EnrollmentInitiated)
	}
	// The relay writes nothing back: each enrollment is still at the revision its create wrote.
	kv, err := js.KeyValue(ctx, "mfa_enrollments")
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range statusIDs {
		e, err := kv.Get(ctx, "e."+id)
		if err != nil {
			t.Fatal(err)
		}
		if e.Revision() != createdRevs[i] {
			t.Errorf("e.%s at revision %d after its event was relayed, created at %d: written again", id, e.Revision(), createdRevs[i])
		}
	}
	// The companion finds each enrollment by its exchange id, without an index.
	phone := dial(t, st)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for i, x := range exchangeIDs {
		ack, err := phone.Scan(sctx, x, protocol.Device{DeviceID: fmt.Sprintf("writes-phone-%d", i)})
		if err != nil || ack.Status != "SCANNED" || ack.StatusID != statusIDs[i] {
			t.Fatalf("scan %s = %+v, %v; want SCANNED %s", x, ack, err, statusIDs[i])
		}
	}
}
