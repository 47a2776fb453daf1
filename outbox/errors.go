package outbox

// RejectError is returned by Decode for an outbox record that can never be
// folded. Its Reason is stored in neon_auth.outbox_rejects.error, so it is one
// sentence saying what was wrong and where, for a person to act on; retrying
// the same record cannot succeed.
type RejectError struct {
	// Reason is the sentence stored as outbox_rejects.error.
	Reason string
}

// Error returns the reason.
func (e *RejectError) Error() string { return e.Reason }
