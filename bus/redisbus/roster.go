package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// The membership record (bus.Roster) is five keys in the slot of
// "{<prefix>}", the slot of AllChannel:
//
//	{<prefix>}:roster:e  hash: member -> "<info> <forget ms>" (decimal)
//	{<prefix>}:roster:f  sorted set: fresh members, scored by the time (ms, Redis's clock) they turn stale
//	{<prefix>}:roster:s  sorted set: stale members, scored by the time they are removed
//	{<prefix>}:roster:c  sorted set: every member, scored by the version of its last change
//	{<prefix>}:roster:m  hash: epoch (random, set when the record begins), v (the last version), last (the time of the last write)
//
// A member is "<instance, 16 hex digits>:<node id>". One script (rosterScript)
// writes the caller's entry, moves the members past their bound from fresh to
// stale (a change), removes those stale for longer than their own forget
// bound, and returns the changes after the caller's version: in steady state
// a few O(log n) operations and a reply of three strings.
func rosterKeys(prefix string) []string {
	p := "{" + prefix + "}:roster:"
	return []string{p + "e", p + "f", p + "s", p + "c", p + "m"}
}

// rosterScript: KEYS as rosterKeys. ARGV: 1 op (beat, leave), 2 member,
// 3 info, 4 stale ms, 5 forget ms (of the caller's entry), 6 since epoch, 7 since version, 8 a new
// random epoch (taken when the record begins), 9 the caller's interval ms
// (a longer pause since the record's last write, m's "last", is a pause of
// the record: it moves every bound on). Returns epoch, version, "1"
// when the changes are the whole record (the caller's version is of another
// epoch, or ahead of the record's: a failover lost its last changes), then member, info, "f" or "s" for
// each change. Every key lives twice the forget bound after the last beat.
var rosterScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[5], 'epoch', ARGV[8])
-- Bounds count the time the record is written, not the time between: after
-- a pause no node could end (scripts refused, Redis stopped, or its clock
-- stepped forward) the bounds move on by the pause, and back when the clock
-- stepped back.
local l = redis.call('HGET', KEYS[5], 'last')
local last = l and tonumber(l)
if last then
  local shift = 0
  if now < last then
    shift = now - last
  elseif now - last > tonumber(ARGV[9]) then
    shift = now - last - tonumber(ARGV[9])
  end
  if shift ~= 0 then
    for k = 2, 3 do
      local all = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
      for i = 1, #all, 2 do
        redis.call('ZADD', KEYS[k], tonumber(all[i + 1]) + shift, all[i])
      end
    end
  end
end
redis.call('HSET', KEYS[5], 'last', now)
local function bump(m)
  local v = redis.call('HINCRBY', KEYS[5], 'v', 1)
  redis.call('ZADD', KEYS[4], v, m)
end
local function forget(m)
  local e = redis.call('HGET', KEYS[1], m)
  return tonumber(e and string.match(e, ' (%d+)$') or ARGV[5])
end
local member = ARGV[2]
local entry = ARGV[3] .. ' ' .. ARGV[5]
if ARGV[1] == 'beat' then
  local was = redis.call('ZSCORE', KEYS[2], member)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), member)
  if not was then
    redis.call('ZREM', KEYS[3], member)
  end
  if not was or redis.call('HGET', KEYS[1], member) ~= entry then
    redis.call('HSET', KEYS[1], member, entry)
    bump(member)
  end
elseif ARGV[1] == 'leave' then
  if redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('ZADD', KEYS[3], now + forget(member), member)
    bump(member)
  end
end
local late = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 256)
for _, m in ipairs(late) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[3], now + forget(m), m)
  bump(m)
end
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. now, 'LIMIT', 0, 256)
for _, m in ipairs(old) do
  redis.call('ZREM', KEYS[3], m)
  redis.call('ZREM', KEYS[4], m)
  redis.call('HDEL', KEYS[1], m)
end
local ttl = 2 * tonumber(ARGV[5])
for i = 1, 5 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
local epoch = redis.call('HGET', KEYS[5], 'epoch')
local v = redis.call('HGET', KEYS[5], 'v') or '0'
local full = ARGV[6] ~= epoch or tonumber(v) < tonumber(ARGV[7])
local changed
if full then
  changed = redis.call('ZRANGE', KEYS[4], 0, -1)
else
  changed = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[7], '+inf')
end
local out = {epoch, v, full and '1' or '0'}
for _, m in ipairs(changed) do
  out[#out + 1] = m
  out[#out + 1] = string.match(redis.call('HGET', KEYS[1], m) or '0', '^%d+')
  if redis.call('ZSCORE', KEYS[2], m) then
    out[#out + 1] = 'f'
  else
    out[#out + 1] = 's'
  end
end
return out
`)

// Beat implements bus.Roster: one script call on the record (see rosterKeys).
func (b *base) Beat(ctx context.Context, rb bus.RosterBeat) (bus.RosterView, error) {
	c, err := b.client(ctx)
	if err != nil {
		return bus.RosterView{}, err
	}
	op := "beat"
	if rb.Leave {
		op = "leave"
	}
	stale := max(1, rb.Stale.Milliseconds())
	forget := max(stale, rb.Forget.Milliseconds())
	interval := rb.Interval.Milliseconds()
	if interval <= 0 || interval > stale {
		interval = stale
	}
	var token [8]byte
	_, _ = rand.Read(token[:])
	args := []string{
		op, rosterMember(rb.Node, rb.Instance), strconv.FormatUint(rb.Info, 10),
		strconv.FormatInt(stale, 10), strconv.FormatInt(forget, 10),
		rb.Since.Epoch, strconv.FormatUint(rb.Since.N, 10), hex.EncodeToString(token[:]),
		strconv.FormatInt(interval, 10),
	}
	vals, err := rosterScript.Exec(ctx, c, rosterKeys(b.opts.Prefix), args).AsStrSlice()
	if err != nil {
		return bus.RosterView{}, b.wrap("roster", err)
	}
	v, err := parseRoster(vals)
	if err != nil {
		return bus.RosterView{}, fmt.Errorf("redisbus: roster: %w", err)
	}
	return v, nil
}

// rosterMember is the record's name of a process.
func rosterMember(node string, inst uint64) string {
	return fmt.Sprintf("%016x:%s", inst, node)
}

var errRosterReply = errors.New("malformed membership record reply")

// parseRoster reads the script's reply. It never panics; what it cannot read
// is an error wrapping errRosterReply.
func parseRoster(vals []string) (bus.RosterView, error) {
	if len(vals) < 3 || (len(vals)-3)%3 != 0 {
		return bus.RosterView{}, fmt.Errorf("%w: %d values", errRosterReply, len(vals))
	}
	if vals[0] == "" {
		return bus.RosterView{}, fmt.Errorf("%w: no epoch", errRosterReply)
	}
	n, err := strconv.ParseUint(vals[1], 10, 64)
	if err != nil {
		return bus.RosterView{}, fmt.Errorf("%w: version %q", errRosterReply, vals[1])
	}
	v := bus.RosterView{Version: bus.RosterVersion{Epoch: vals[0], N: n}, Full: vals[2] == "1"}
	if rest := (len(vals) - 3) / 3; rest > 0 {
		v.Changed = make([]bus.RosterEntry, 0, rest)
	}
	for i := 3; i < len(vals); i += 3 {
		inst, node, ok := strings.Cut(vals[i], ":")
		if !ok || len(inst) != 16 {
			return bus.RosterView{}, fmt.Errorf("%w: member %q", errRosterReply, vals[i])
		}
		id, err := strconv.ParseUint(inst, 16, 64)
		if err != nil {
			return bus.RosterView{}, fmt.Errorf("%w: member %q", errRosterReply, vals[i])
		}
		info, err := strconv.ParseUint(vals[i+1], 10, 64)
		if err != nil {
			return bus.RosterView{}, fmt.Errorf("%w: info %q", errRosterReply, vals[i+1])
		}
		var fresh bool
		switch vals[i+2] {
		case "f":
			fresh = true
		case "s":
		default:
			return bus.RosterView{}, fmt.Errorf("%w: state %q", errRosterReply, vals[i+2])
		}
		v.Changed = append(v.Changed, bus.RosterEntry{Node: node, Instance: id, Info: info, Fresh: fresh})
	}
	return v, nil
}
