package natsx

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/nats-io/nats.go"
)

// NotifierChannels asks the notifier which channels it can deliver on
// (commands.NotifierChannels) and remembers the answer for a few seconds: methods light up
// shortly after a notifier starts and go dark shortly after the last one stops, without a
// request per code.
type NotifierChannels struct {
	NC *nats.Conn

	mu      sync.Mutex
	reply   commands.ChannelsReply
	checked time.Time
	// answered is when the notifier last answered (a timeout keeps that answer, channelsStale).
	answered time.Time
}

// channelsTTL is how long an answer is kept; channelsStale how long the last one stands in when
// the notifier does not answer in time.
const (
	channelsTTL   = 5 * time.Second
	channelsStale = time.Minute
)

// Active reports whether the notifier delivers on channel (pkg/delivery: email, sms).
func (n *NotifierChannels) Active(ctx context.Context, channel string) bool {
	r := n.Reply(ctx)
	switch channel {
	case delivery.Email:
		return r.Email
	case delivery.SMS:
		return r.SMS
	}
	return false
}

// Reply returns the notifier's last answer (none: nothing active).
func (n *NotifierChannels) Reply(ctx context.Context) commands.ChannelsReply {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.checked.IsZero() && time.Since(n.checked) < channelsTTL {
		return n.reply
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var r commands.ChannelsReply
	msg, err := n.NC.RequestWithContext(ctx, commands.NotifierChannels, nil)
	if err == nil && json.Unmarshal(msg.Data, &r) == nil {
		n.reply, n.checked, n.answered = r, time.Now(), time.Now()
		return r
	}
	// No answer (no notifier reachable right now: it is starting or restarting, or its interest
	// has not crossed the cluster yet; or a timeout): the last answer stands for a while, so a
	// hiccup does not turn EMAIL and SMS off. Without a recent one, nothing is active, and the
	// next call asks again (a request without responders fails at once), so a notifier that
	// comes up is seen at once.
	if !n.answered.IsZero() && time.Since(n.answered) < channelsStale {
		n.checked = time.Now()
		return n.reply
	}
	return commands.ChannelsReply{}
}
