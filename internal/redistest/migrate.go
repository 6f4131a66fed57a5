package redistest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
)

// SlotMigration is one slot moving from one primary to another the way
// redis-cli --cluster reshard moves it, one step at a time: StartMigration
// marks the slot IMPORTING on the target and MIGRATING on the source, MoveKeys
// moves keys with MIGRATE (the source then answers -ASK for them), Finish
// gives the slot to the target on every primary (CLUSTER SETSLOT NODE; the
// source then answers -MOVED). A migration never finished stays half done,
// as one whose redis-cli was interrupted (until redis-cli --cluster fix).
type SlotMigration struct {
	cs       *ClusterSet
	slot     int
	from, to *Server
	toID     string
	fromID   string
}

// MigrateSlot moves slot from its primary to to: every key, then the
// ownership. It returns once every running node reports to as serving the
// slot.
func (cs *ClusterSet) MigrateSlot(ctx context.Context, slot int, to *Server) error {
	m, err := cs.StartMigration(ctx, slot, to)
	if err != nil {
		return err
	}
	for {
		n, err := m.MoveKeys(ctx, 10)
		if err != nil {
			return err
		}
		if n == 0 {
			return m.Finish(ctx)
		}
	}
}

// StartMigration marks slot IMPORTING on to and MIGRATING on the primary
// serving it now. Keys stay where they are until MoveKeys.
func (cs *ClusterSet) StartMigration(ctx context.Context, slot int, to *Server) (*SlotMigration, error) {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	from, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		return nil, err
	}
	if from == to {
		return nil, fmt.Errorf("redistest: slot %d is already on %s", slot, to.Addr())
	}
	m := &SlotMigration{cs: cs, slot: slot, from: from, to: to}
	if m.fromID, err = nodeID(ctx, from); err != nil {
		return nil, err
	}
	if m.toID, err = nodeID(ctx, to); err != nil {
		return nil, err
	}
	sl := strconv.Itoa(slot)
	if _, err := to.Do(ctx, "CLUSTER", "SETSLOT", sl, "IMPORTING", m.fromID); err != nil {
		return nil, fmt.Errorf("redistest: SETSLOT %s IMPORTING on %s: %w", sl, to.Addr(), err)
	}
	if _, err := from.Do(ctx, "CLUSTER", "SETSLOT", sl, "MIGRATING", m.toID); err != nil {
		return nil, fmt.Errorf("redistest: SETSLOT %s MIGRATING on %s: %w", sl, from.Addr(), err)
	}
	return m, nil
}

// From returns the source of the migration, To its target.
func (m *SlotMigration) From() *Server { return m.from }

// To returns the target of the migration.
func (m *SlotMigration) To() *Server { return m.to }

// MoveKeys moves up to max keys of the slot (CLUSTER GETKEYSINSLOT) to the
// target with one MIGRATE, and returns how many it moved: 0 once the source
// holds none.
func (m *SlotMigration) MoveKeys(ctx context.Context, max int) (int, error) {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	v, err := m.from.Do(ctx, "CLUSTER", "GETKEYSINSLOT", strconv.Itoa(m.slot), strconv.Itoa(max))
	if err != nil {
		return 0, fmt.Errorf("redistest: GETKEYSINSLOT on %s: %w", m.from.Addr(), err)
	}
	arr, _ := v.([]any)
	if len(arr) == 0 {
		return 0, nil
	}
	args := []string{"MIGRATE", "127.0.0.1", strconv.Itoa(m.to.Port()), "", "0", "10000"}
	switch cfg := m.cs.cfg; {
	case cfg.user != "":
		args = append(args, "AUTH2", cfg.user, cfg.password)
	case cfg.defaultPassword != "":
		args = append(args, "AUTH", cfg.defaultPassword)
	}
	args = append(args, "KEYS")
	for _, k := range arr {
		s, ok := k.(string)
		if !ok {
			return 0, fmt.Errorf("%w: GETKEYSINSLOT: key of type %T", ErrProtocol, k)
		}
		args = append(args, s)
	}
	if _, err := m.from.Do(ctx, args...); err != nil {
		return 0, fmt.Errorf("redistest: MIGRATE from %s to %s: %w", m.from.Addr(), m.to.Addr(), err)
	}
	return len(arr), nil
}

// Finish gives the slot to the target: CLUSTER SETSLOT <slot> NODE <target>
// on the target, then on the source, then on the other primaries, and waits
// until every running node reports the target as serving the slot. Keys the
// source still holds are left behind (MoveKeys until it returns 0 first).
func (m *SlotMigration) Finish(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	prims, err := m.cs.Primaries(ctx)
	if err != nil {
		return err
	}
	order := []*Server{m.to, m.from}
	for _, p := range prims {
		if !slices.Contains(order, p) {
			order = append(order, p)
		}
	}
	sl := strconv.Itoa(m.slot)
	for _, p := range order {
		if _, err := p.Do(ctx, "CLUSTER", "SETSLOT", sl, "NODE", m.toID); err != nil {
			return fmt.Errorf("redistest: SETSLOT %s NODE on %s: %w", sl, p.Addr(), err)
		}
	}
	return waitUntil(ctx, slowPollInterval, m.to.Addr()+" serving slot "+sl, func(ctx context.Context) error {
		for _, s := range m.cs.nodes {
			if !s.Running() {
				continue
			}
			ranges, err := clusterSlots(ctx, s)
			if err != nil {
				return fmt.Errorf("%s: %w", s.Addr(), err)
			}
			if !slices.ContainsFunc(ranges, func(r slotRange) bool {
				return m.slot >= r.start && m.slot <= r.end && r.primary == m.to.Addr()
			}) {
				return fmt.Errorf("%s does not see %s serve slot %d yet", s.Addr(), m.to.Addr(), m.slot)
			}
		}
		return nil
	})
}

func nodeID(ctx context.Context, s *Server) (string, error) {
	v, err := s.Do(ctx, "CLUSTER", "MYID")
	if err != nil {
		return "", fmt.Errorf("redistest: CLUSTER MYID on %s: %w", s.Addr(), err)
	}
	id, ok := v.(string)
	if !ok || id == "" {
		return "", fmt.Errorf("%w: CLUSTER MYID: %T", ErrProtocol, v)
	}
	return id, nil
}
