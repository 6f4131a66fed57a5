package redistest

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
	}{
		{"+OK\r\n", "OK"},
		{"-ERR bad\r\n", ReplyError("ERR bad")},
		{":-42\r\n", int64(-42)},
		{"$5\r\nhe\r\no\r\n", "he\r\no"},
		{"$0\r\n\r\n", ""},
		{"$-1\r\n", nil},
		{"*-1\r\n", nil},
		{"*0\r\n", []any{}},
		{"*3\r\n:1\r\n$1\r\na\r\n*1\r\n-E x\r\n", []any{int64(1), "a", []any{ReplyError("E x")}}},
		{"_\r\n", nil},
		{"#t\r\n", true},
		{",1.5\r\n", 1.5},
		{"%1\r\n+k\r\n:1\r\n", []any{"k", int64(1)}},
		{"~1\r\n+m\r\n", []any{"m"}},
		{"=7\r\ntxt:abc\r\n", "abc"},
		{"(123456789012345678901234567890\r\n", "123456789012345678901234567890"},
		{"|1\r\n+a\r\n+b\r\n+real\r\n", "real"},
		{"!3\r\nERR\r\n", ReplyError("ERR")},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)), 0)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestReadReplyRejectsMalformed(t *testing.T) {
	for _, in := range []string{
		"", "\r\n", "+OK\n", "?x\r\n", ":x\r\n", "$x\r\n", "$-2\r\n", "$3\r\nab\r\n",
		"$2\r\nabcd", "*2\r\n:1\r\n", "*99999999999\r\n", "$999999999999\r\n", "#x\r\n",
		",nan?\r\n", "%1\r\n+k\r\n",
		strings.Repeat("*1\r\n", maxDepth+2) + ":1\r\n",
		"+" + strings.Repeat("a", maxLine+10) + "\r\n",
	} {
		_, err := readReply(bufio.NewReaderSize(strings.NewReader(in), maxLine), 0)
		if err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	_, err := readReply(bufio.NewReader(strings.NewReader("?\r\n")), 0)
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("unknown type: %v, want ErrProtocol", err)
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"+OK\r\n", "-ERR x\r\n", ":1\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*2\r\n:1\r\n+a\r\n",
		"%1\r\n+k\r\n:1\r\n", "|1\r\n+a\r\n+b\r\n:1\r\n", "=5\r\ntxt:a\r\n", "!1\r\nE\r\n",
		",1e3\r\n", "#f\r\n", "_\r\n", "(1\r\n", ">1\r\n+m\r\n", "~0\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(b)), maxLine)
		for range 8 {
			if _, err := readReply(r, 0); err != nil {
				return
			}
		}
	})
}

func TestWriteCommand(t *testing.T) {
	var sb strings.Builder
	w := bufio.NewWriter(&sb)
	if err := writeCommand(w, []string{"SET", "k", "a\r\nb", ""}); err != nil {
		t.Fatal(err)
	}
	want := "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"
	if sb.String() != want {
		t.Fatalf("got %q, want %q", sb.String(), want)
	}
}
