package bridgesvc

import (
	"testing"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
)

// TestProtocolExample holds the worked example of PROTOCOL.md §9 to the bridge's verifier.
func TestProtocolExample(t *testing.T) {
	key := &commands.DeviceKey{Kty: "EC", Crv: "P-256",
		X: "YP7UuiVanTHJYet0xjVtaMBJuJI7Yfps5mliLmDyn7Y", Y: "eQP-EAi4vJmkGunpVii8ZPLxsgwtfp9Rd6PClNRGIpk"}
	pub, err := parseDeviceKey(key)
	if err != nil {
		t.Fatal(err)
	}
	login := protocol.LoginMessage("q2Lw3t0iR4r9kX1vS8ZbAe0u", "a7f0c2d9-6e5b-4a3c-9d2e-1f0a9b8c7d6e")
	if !verify(pub, login, "RxE5ZjOR6UpKy1X_Sp7eWzYY0ZWV7diJ5Wg6f_N_whuZ_hOl1ChNY_X29JtfL7WES3mJhPMd5caxFXEwmJmdEQ") {
		t.Error("login example does not verify")
	}
	push := protocol.PushMessage("5d0f8c2e-3b1a-4e6f-9a7d-2c8b1e0f4a6d", "approve", "42")
	if !verify(pub, push, "AUJwI2G2v3BHr3NYC12HsbJ1GBApLk0b7KrELDo86kMVff3HZX6OgNXPQksQjGobC3LYzFHC-dCO7l1o1YYr5A") {
		t.Error("push example does not verify")
	}
	if verify(pub, protocol.PushMessage("5d0f8c2e-3b1a-4e6f-9a7d-2c8b1e0f4a6d", "approve", "12"),
		"AUJwI2G2v3BHr3NYC12HsbJ1GBApLk0b7KrELDo86kMVff3HZX6OgNXPQksQjGobC3LYzFHC-dCO7l1o1YYr5A") {
		t.Error("push example verifies for another number")
	}
}
