package socketio

import (
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// wireParser returns p when packets must be translated for it on their way
// out, nil for the JSON parser, whose frames are the Encoded itself.
func wireParser(p parser.Parser) parser.Parser {
	if p == nil || p == parser.JSON {
		return nil
	}
	return p
}

// wireMessages lists in buf the Engine.IO messages that carry e in format p
// (nil: JSON).
func wireMessages(p parser.Parser, buf *[4]engineio.Message, e *parser.Encoded) ([]engineio.Message, error) {
	if p == nil {
		return messagesOf(buf, e), nil
	}
	frames, err := p.Frames(e)
	if err != nil {
		return nil, err
	}
	msgs := buf[:0]
	for _, f := range frames {
		msgs = append(msgs, engineio.Message{Data: f.Data, Binary: f.Binary})
	}
	return msgs, nil
}
