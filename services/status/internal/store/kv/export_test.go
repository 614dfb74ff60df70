package kv

// PauseWatch holds back (true) or releases (false) the deliveries of the view's watch, as a
// stalled ordered consumer would.
func (v *View) PauseWatch(paused bool) { v.pause.Store(paused) }
