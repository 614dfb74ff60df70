package kv

import "github.com/mfaflow/mfaflow/services/status/internal/enrollment"

// PauseWatch holds back (true) or releases (false) the deliveries of the view's watch, as a
// stalled ordered consumer would.
func (v *View) PauseWatch(paused bool) { v.pause.Store(paused) }

// BeginWrite registers a write of id by this replica, as Create and Update do before they write,
// and returns the token they take.
func (v *View) BeginWrite(id string) uint64 {
	tok := v.token()
	v.writeStarts(id)
	return tok
}

// EndWrite ends a write registered with BeginWrite whose outcome is e (ok) or a failure.
func (v *View) EndWrite(tok uint64, e enrollment.Enrollment, ok bool) {
	v.writeEnds(tok, e.ID, enrollmentEntry(e), ok)
}

// PassedOver is the newest revision of id the watch delivered while a write of it was in flight.
func (v *View) PassedOver(id string) uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if w := v.writing[id]; w != nil {
		return w.passed
	}
	return 0
}
