package replicator

import (
	"fmt"

	"github.com/jackc/pglogrepl"
)

// relation maps a pgoutput relation's columns onto textRow positions.
type relation struct {
	isOutbox bool
	position []int // column index in the tuple → textRow index, -1 to ignore
}

func newRelation(m *pglogrepl.RelationMessage) (*relation, error) {
	rel := &relation{isOutbox: m.Namespace == "neon_auth" && m.RelationName == "outbox"}
	if !rel.isOutbox {
		return rel, nil
	}
	found := make([]bool, len(outboxColumns))
	for _, col := range m.Columns {
		pos := -1
		for i, name := range outboxColumns {
			if col.Name == name {
				pos, found[i] = i, true
			}
		}
		rel.position = append(rel.position, pos)
	}
	for i, ok := range found {
		if !ok {
			return nil, configErrorf("neon_auth.outbox has no column %q: run 'replicator migrate'", outboxColumns[i])
		}
	}
	return rel, nil
}

// textRow extracts the outbox columns of an inserted tuple.
func (r *relation) textRow(t *pglogrepl.TupleData) (textRow, error) {
	var row textRow
	if t == nil || len(t.Columns) != len(r.position) {
		return row, fmt.Errorf("outbox insert has %d columns, relation message said %d", tupleLen(t), len(r.position))
	}
	for i, col := range t.Columns {
		pos := r.position[i]
		if pos < 0 {
			continue
		}
		switch col.DataType {
		case pglogrepl.TupleDataTypeText:
			row[pos] = col.Data
			if row[pos] == nil {
				row[pos] = []byte{}
			}
		case pglogrepl.TupleDataTypeNull:
			row[pos] = nil
		default:
			return row, fmt.Errorf("outbox column %s arrived as %q, want text", outboxColumns[pos], col.DataType)
		}
	}
	return row, nil
}

func tupleLen(t *pglogrepl.TupleData) int {
	if t == nil {
		return 0
	}
	return len(t.Columns)
}
