package tests_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestDevStackOnMongo runs the dev stack with MFA_STORE=mongo (the server of MFA_MONGODB_URI,
// or an embedded FerretDB) and completes an enrollment and a TOTP sign-in, with their events
// relayed from the MongoDB outboxes and the documents where the docs say they are.
func TestDevStackOnMongo(t *testing.T) {
	uri := mongotest.DatabaseURI(t)
	s := startSignIn(t, map[string]string{"MFA_STORE": "mongo", "MFA_MONGODB_URI": uri})
	alice := s.token(t, "alice", "", "")

	in := initiate(t, s.Stack, alice, "?qr=none")
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": s.code(t, in.TOTPSecret)}, http.StatusOK, nil)
	if st := poll(t, s.Stack, alice, in.StatusID); st.Status != "ENROLLED" {
		t.Fatalf("status after enrolling = %+v", st)
	}
	s.rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentEnrolled)

	s.nextStep()
	auth := s.startAuth(t, alice, "totp", map[string]any{"usage_type": "MULTIFACTOR_AUTHENTICATION"})
	var res authResult
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": auth.ExchangeID.ExchangeID, "pass_code": s.code(t, in.TOTPSecret)}, http.StatusOK, &res)
	if res.Status != "AUTHENTICATED" || res.MFAToken == "" || res.PHID == "" {
		t.Fatalf("verification answer = %+v", res)
	}
	s.verifyMFAToken(t, res.MFAToken, "alice")
	s.rec.WaitTypes(t, auth.StatusID, events.VerificationInitiated, events.VerificationSucceeded)

	// The state is in MongoDB, not in the KV buckets.
	client, db, err := mongodoc.Connect(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	for coll, id := range map[string]string{"enrollments": auth.StatusID, "credentials": res.PHID} {
		if n, err := db.Collection(coll).CountDocuments(t.Context(), bson.D{{Key: "_id", Value: id}}); err != nil || n != 1 {
			t.Errorf("%s holds %d documents with _id %s (%v), want 1", coll, n, id, err)
		}
	}
}
