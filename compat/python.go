package compat

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// pythonMessage is a message of python-socketio's pub/sub managers, as
// python-socketio 5.14 and later publish it (JSON).
type pythonMessage struct {
	method    string
	namespace string
	event     string
	data      *value
	binary    bool
	room      *value // a room, a list of rooms, or null
	skipSID   *value // likewise
	callback  *value // [room, namespace, id] or null
	hostID    string
	sid       string
	roomName  string
}

// errPickle marks a message pickled by python-socketio before 5.14.
var errPickle = errors.New("compat: a pickled python-socketio message")

// decodePython decodes a message of the managers' channel. Pickled messages
// (protocol 2 and later start with 0x80) are refused, never unpickled.
func decodePython(b []byte) (*pythonMessage, error) {
	if len(b) > 0 && b[0] == 0x80 {
		return nil, errPickle
	}
	v, err := decodeJSON(b)
	if err != nil {
		return nil, err
	}
	if v.kind != kObj || v.getStr("method") == "" {
		return nil, fmt.Errorf("%w: not an object with a method", errMalformed)
	}
	m := &pythonMessage{
		method: v.getStr("method"), namespace: v.getStr("namespace"), event: v.getStr("event"),
		data: v.get("data"), room: v.get("room"), skipSID: v.get("skip_sid"), callback: v.get("callback"),
		hostID: v.getStr("host_id"), sid: v.getStr("sid"), roomName: v.getStr("room"),
	}
	if b := v.get("binary"); b != nil && b.kind == kBool {
		m.binary = b.b
	}
	if m.namespace == "" {
		m.namespace = "/"
	}
	return m, nil
}

// roomList reads a room argument of python-socketio: a string, a list, or null.
func roomList(v *value) []string {
	switch {
	case v == nil:
		return nil
	case v.kind == kStr:
		return []string{v.str}
	case v.kind == kArr:
		return v.strings()
	}
	return nil
}

// pythonPacket builds the event of an emit: [event, ...data], binary
// attachments decoded from base64 when the message says binary.
func (m *pythonMessage) packet() (*parser.Packet, error) {
	if m.event == "" {
		return nil, fmt.Errorf("%w: emit without an event", errMalformed)
	}
	args := m.data
	var atts [][]byte
	if m.binary {
		if args == nil || args.kind != kArr || len(args.arr) == 0 {
			return nil, fmt.Errorf("%w: binary emit without its data", errMalformed)
		}
		for _, a := range args.arr[1:] {
			if a.kind != kStr {
				return nil, fmt.Errorf("%w: attachment is not base64", errMalformed)
			}
			b, err := base64.StdEncoding.DecodeString(a.str)
			if err != nil {
				return nil, fmt.Errorf("%w: attachment: %w", errMalformed, err)
			}
			atts = append(atts, b)
		}
		args = args.arr[0]
	}
	list := array(str(m.event))
	switch {
	case args == nil:
	case args.kind == kArr:
		list.arr = append(list.arr, args.arr...)
	default:
		list.arr = append(list.arr, args)
	}
	raw, err := rawJSON(list, nil)
	if err != nil {
		return nil, err
	}
	p := &parser.Packet{Type: parser.Event, Namespace: m.namespace, Data: raw}
	if len(atts) > 0 {
		// Check every placeholder names an attachment, as a client would.
		if _, err := fromRaw(raw, atts); err != nil {
			return nil, err
		}
		p.Type, p.Attachments = parser.BinaryEvent, atts
	}
	return p, nil
}

// python applies one message of python-socketio's managers.
func (l *Listener) python(b []byte) {
	m, err := decodePython(b)
	if errors.Is(err, errPickle) {
		l.drop(sourcePython, reasonPickle,
			"compat: a pickled python-socketio message was refused (never unpickled); upgrade the publisher to python-socketio 5.14 or later, which publishes JSON",
			slog.Int("bytes", len(b)))
		return
	}
	if err != nil {
		l.drop(sourcePython, reasonDecode, "compat: a python-socketio message did not decode; not applied", slog.Any("error", err))
		return
	}
	if m.method == "callback" {
		return // for the python server that asked for it
	}
	w := l.target(m.namespace)
	if w == nil {
		l.drop(sourcePython, reasonNamespace, "compat: a python-socketio message for a namespace this node does not serve; not applied",
			slog.String("namespace", m.namespace))
		return
	}
	ctx, cancel := context.WithTimeout(l.life, defaultRequestTimeout)
	defer cancel()
	one := func(sid string) adapter.Options { return adapter.Options{Rooms: []string{sid}, Local: true} }
	switch m.method {
	case "emit":
		p, perr := m.packet()
		if perr != nil {
			err = perr
			break
		}
		opts := adapter.Options{Rooms: roomList(m.room), Except: roomList(m.skipSID), Local: true}
		if cb := m.callback; cb != nil && cb.kind == kArr && len(cb.arr) == 3 && m.hostID != "" {
			l.pythonCallback(w, p, opts, m.hostID, cb)
			return
		}
		err = w.Broadcast(ctx, p, opts)
	case "disconnect":
		err = w.DisconnectSockets(ctx, one(m.sid), false)
	case "enter_room":
		err = w.AddSockets(ctx, one(m.sid), []string{m.roomName})
	case "leave_room":
		err = w.DelSockets(ctx, one(m.sid), []string{m.roomName})
	case "close_room":
		err = w.DelSockets(ctx, one(m.roomName), []string{m.roomName})
	default:
		l.drop(sourcePython, reasonUnsupported, "compat: a python-socketio message of an unknown method; not applied", slog.String("method", m.method))
		return
	}
	if err != nil && !errors.Is(err, adapter.ErrClosed) {
		l.drop(sourcePython, reasonInvalid, "compat: a python-socketio message cannot be applied",
			slog.String("method", m.method), slog.String("namespace", m.namespace), slog.Any("error", err))
	}
}

// pythonCallback emits with an ack to the matching sockets here and sends each
// ack back to the python server that asked, as its managers do between hosts.
func (l *Listener) pythonCallback(w *listened, p *parser.Packet, opts adapter.Options, hostID string, cb *value) {
	sid, nsp, id := cb.arr[0], cb.arr[1], cb.arr[2]
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.life, l.opts.AckTimeout)
		defer cancel()
		replies, err := w.BroadcastWithAck(ctx, p, opts)
		for _, r := range replies {
			args := &value{kind: kArr}
			for _, a := range r.Args {
				v, err := fromRaw(a, nil)
				if err != nil {
					v = null()
				}
				args.arr = append(args.arr, v)
			}
			msg := object().set("method", str("callback")).set("host_id", str(hostID)).
				set("sid", sid).set("namespace", nsp).set("id", id).set("args", args)
			b, err := appendJSON(nil, msg, nil)
			if err != nil {
				l.drop(sourcePython, reasonAnswer, "compat: a python-socketio callback could not be encoded", slog.Any("error", err))
				continue
			}
			l.answer(outMsg{channel: l.opts.PythonChannel, payload: b})
		}
		if err != nil && !errors.Is(err, adapter.ErrClosed) && l.life.Err() == nil {
			l.drop(sourcePython, reasonInvalid, "compat: a python-socketio emit with a callback got no ack in time", slog.Any("error", err))
		}
	}()
}
