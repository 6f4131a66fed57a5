package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flag values whose errors say what was wrong in plain words: the standard
// flag package answers a bad duration or number with a bare "parse error".

// durationFlag is a time.Duration flag. With minusOne, "-1" is accepted and
// stored as -1 (the "no bound" of the setting).
type durationFlag struct {
	p        *time.Duration
	minusOne bool
}

func (f durationFlag) String() string {
	if f.p == nil {
		return ""
	}
	if f.minusOne && *f.p == -1 {
		return "-1"
	}
	return f.p.String()
}

func (f durationFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	if f.minusOne && s == "-1" {
		*f.p = -1
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return fmt.Errorf("%q has no unit: write it like %s%s", s, s, "s")
		}
		return errors.New("not a duration: write it like 25s, 500ms, 2m or 1h30m")
	}
	*f.p = d
	return nil
}

// intFlag is an int flag.
type intFlag struct{ p *int }

func (f intFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.Itoa(*f.p)
}

func (f intFlag) Set(s string) error {
	var v int64
	if err := (int64Flag{p: &v}).Set(s); err != nil {
		return err
	}
	if int64(int(v)) != v {
		return fmt.Errorf("%q is too large", s)
	}
	*f.p = int(v)
	return nil
}

// int64Flag is an int64 flag; it also takes sizes like 64MiB or 512KiB (as
// intFlag does).
type int64Flag struct{ p *int64 }

func (f int64Flag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.FormatInt(*f.p, 10)
}

func (f int64Flag) Set(s string) error {
	s = strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mul    int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := parseInt(n, 64)
			if err != nil {
				return err
			}
			if v < 0 || v > (1<<62)/u.mul {
				return fmt.Errorf("%q is out of range", s)
			}
			*f.p = v * u.mul
			return nil
		}
	}
	v, err := parseInt(s, 64)
	if err != nil {
		return err
	}
	*f.p = v
	return nil
}

func parseInt(s string, bits int) (int64, error) {
	v, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), "_", ""), 10, bits)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is too large", s)
	case err != nil:
		return 0, errors.New("not a whole number")
	}
	return v, nil
}

// boolFlag is a bool flag (-name alone means true).
type boolFlag struct{ p *bool }

func (f boolFlag) String() string {
	if f.p == nil {
		return "false"
	}
	return strconv.FormatBool(*f.p)
}

func (f boolFlag) Set(s string) error {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want true or false")
	}
	*f.p = v
	return nil
}

func (f boolFlag) IsBoolFlag() bool { return true }
