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

// The membership record (bus.Roster) is seven keys in the slot of
// "{<prefix>}", the slot of AllChannel:
//
//	{<prefix>}:roster:e  hash: member -> "<info> <forget ms> <interval ms>" (decimal)
//	{<prefix>}:roster:f  sorted set: fresh members, scored by the time (ms, Redis's clock) they turn stale
//	{<prefix>}:roster:s  sorted set: stale members, scored by the time they are removed
//	{<prefix>}:roster:c  sorted set: every member, scored by the version of its last change
//	{<prefix>}:roster:i  sorted set: every member, scored by its interval (ms)
//	{<prefix>}:roster:x  hash: member -> "u" (fresh only because the record paused), "l" (left)
//	{<prefix>}:roster:m  hash: epoch (random, set when the record begins), v (the last version),
//	                     last (the time of the last write), rv (the highest version of a removed member)
//
// A member is "<instance, 16 hex digits>:<node id>". One script (rosterScript)
// writes the caller's entry, moves the members past their bound from fresh to
// stale (a change), removes those stale for longer than their own forget
// bound, and returns the changes after the caller's version: in steady state
// a few O(log n) operations and a reply of three strings.
//
// Bounds count the time the record is written, not the time between: when
// the record was not written for longer than twice a member's interval (no
// node could write: scripts refused, Redis stopped; or Redis's clock stepped
// forward), a fresh member's bound moves on by the pause beyond its interval,
// and its entry is unconfirmed ("u", a change) until it is written again: a
// reader takes it as no sign of life, so that a process that died before or
// during the pause is not brought back. When the clock stepped back, every
// bound moves back by the step.
func rosterKeys(prefix string) []string {
	p := "{" + prefix + "}:roster:"
	return []string{p + "e", p + "f", p + "s", p + "c", p + "m", p + "x", p + "i"}
}

// rosterScript: KEYS as rosterKeys. ARGV: 1 op (beat, leave), 2 member,
// 3 info, 4 stale ms, 5 forget ms, 6 since epoch, 7 since version, 8 a new
// random epoch (taken when the record begins), 9 interval ms (of the caller's
// entry). Returns epoch, version, "1" when the changes are the whole record
// (the caller's version is of another epoch, ahead of the record's: a
// failover lost its last changes, or below that of a member removed since),
// then member, info and state for each change: "f" fresh, "u" unconfirmed,
// "s" stale, "l" left. Every key lives twice the forget bound after the last
// beat.
var rosterScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[5], 'epoch', ARGV[8])
local function bump(m)
  local v = redis.call('HINCRBY', KEYS[5], 'v', 1)
  redis.call('ZADD', KEYS[4], v, m)
end
local function forget(m)
  local e = redis.call('HGET', KEYS[1], m)
  return tonumber(e and string.match(e, '^%d+ (%d+)') or ARGV[5])
end
local function move(k, m, d)
  local sc = redis.call('ZSCORE', k, m)
  if sc then
    redis.call('ZADD', k, tonumber(sc) + d, m)
  end
end
local l = redis.call('HGET', KEYS[5], 'last')
local last = l and tonumber(l)
if last and now < last then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    move(KEYS[2], m, now - last)
    move(KEYS[3], m, now - last)
  end
elseif last then
  local gap = now - last
  local paused = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. (gap / 2), 'WITHSCORES')
  for i = 1, #paused, 2 do
    local m = paused[i]
    local d = gap - tonumber(paused[i + 1])
    if redis.call('ZSCORE', KEYS[2], m) then
      move(KEYS[2], m, d)
      if redis.call('HGET', KEYS[6], m) ~= 'u' then
        redis.call('HSET', KEYS[6], m, 'u')
        bump(m)
      end
    end
  end
end
redis.call('HSET', KEYS[5], 'last', now)
local member = ARGV[2]
local entry = ARGV[3] .. ' ' .. ARGV[5] .. ' ' .. ARGV[9]
if ARGV[1] == 'beat' then
  local was = redis.call('ZSCORE', KEYS[2], member)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), member)
  redis.call('ZADD', KEYS[7], tonumber(ARGV[9]), member)
  if not was then
    redis.call('ZREM', KEYS[3], member)
  end
  local flagged = redis.call('HDEL', KEYS[6], member) == 1
  if not was or flagged or redis.call('HGET', KEYS[1], member) ~= entry then
    redis.call('HSET', KEYS[1], member, entry)
    bump(member)
  end
elseif ARGV[1] == 'leave' then
  if redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('ZADD', KEYS[3], now + forget(member), member)
    redis.call('HSET', KEYS[6], member, 'l')
    bump(member)
  end
end
local late = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 256)
for _, m in ipairs(late) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[3], now + forget(m), m)
  redis.call('HDEL', KEYS[6], m)
  bump(m)
end
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. now, 'LIMIT', 0, 256)
local rv = tonumber(redis.call('HGET', KEYS[5], 'rv') or '0')
for _, m in ipairs(old) do
  rv = math.max(rv, tonumber(redis.call('ZSCORE', KEYS[4], m) or '0'))
  redis.call('ZREM', KEYS[3], m)
  redis.call('ZREM', KEYS[4], m)
  redis.call('ZREM', KEYS[7], m)
  redis.call('HDEL', KEYS[1], m)
  redis.call('HDEL', KEYS[6], m)
end
if #old > 0 then
  redis.call('HSET', KEYS[5], 'rv', rv)
end
local ttl = 2 * tonumber(ARGV[5])
for i = 1, 7 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
local epoch = redis.call('HGET', KEYS[5], 'epoch')
local v = redis.call('HGET', KEYS[5], 'v') or '0'
local since = tonumber(ARGV[7])
local full = ARGV[6] ~= epoch or tonumber(v) < since or since < rv
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
  local x = redis.call('HGET', KEYS[6], m)
  if redis.call('ZSCORE', KEYS[2], m) then
    out[#out + 1] = x == 'u' and 'u' or 'f'
  else
    out[#out + 1] = x == 'l' and 'l' or 's'
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
		if err != nil || rosterMember(node, id) != vals[i] {
			// Only the script's own form (lower-case hex) names a member.
			return bus.RosterView{}, fmt.Errorf("%w: member %q", errRosterReply, vals[i])
		}
		info, err := strconv.ParseUint(vals[i+1], 10, 64)
		if err != nil {
			return bus.RosterView{}, fmt.Errorf("%w: info %q", errRosterReply, vals[i+1])
		}
		e := bus.RosterEntry{Node: node, Instance: id, Info: info}
		switch vals[i+2] {
		case "f":
			e.Fresh = true
		case "u":
			e.Fresh, e.Unconfirmed = true, true
		case "s":
		case "l":
			e.Left = true
		default:
			return bus.RosterView{}, fmt.Errorf("%w: state %q", errRosterReply, vals[i+2])
		}
		v.Changed = append(v.Changed, e)
	}
	return v, nil
}
