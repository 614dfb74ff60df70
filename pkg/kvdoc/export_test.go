package kvdoc

import "github.com/nats-io/nats.go/jetstream"

// ObserveEntries has r call f with every entry its watch delivers.
func ObserveEntries(r *Relay, f func(jetstream.KeyValueEntry)) { r.observe = f }
