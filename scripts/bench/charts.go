package main

import (
	"fmt"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// throughputChart draws the replicator's throughput next to the
// references', for the backfill and the drain.
func throughputChart(r *results, path string) error {
	p := plot.New()
	p.Title.Text = "Throughput (events/s, higher is better)"
	p.Y.Label.Text = "events/s"
	p.Y.Min = 0
	bf, dr := r.Backfill, r.Drain
	rep := plotter.Values{rate(bf.Events, bf.Replicator), rate(dr.Events, dr.Replicator)}
	ref := plotter.Values{rate(bf.Events, bf.Reference), rate(dr.Events, dr.Recvlogical)}
	w := vg.Points(36)
	repBars, err := plotter.NewBarChart(rep, w)
	if err != nil {
		return err
	}
	refBars, err := plotter.NewBarChart(ref, w)
	if err != nil {
		return err
	}
	repBars.Color, repBars.Offset = plotutil.Color(0), -w/2
	refBars.Color, refBars.Offset = plotutil.Color(1), w/2
	repBars.LineStyle.Width, refBars.LineStyle.Width = 0, 0
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	top := max(slices.Max(rep), slices.Max(ref))
	ratios, err := plotter.NewLabels(plotter.XYLabels{
		XYs:    []plotter.XY{{X: 0, Y: max(rep[0], ref[0]) + top*0.03}, {X: 1, Y: max(rep[1], ref[1]) + top*0.03}},
		Labels: []string{ratioLabel(rep[0], ref[0]), ratioLabel(rep[1], ref[1])},
	})
	if err != nil {
		return err
	}
	for i := range ratios.TextStyle {
		ratios.TextStyle[i].XAlign = draw.XCenter
	}
	p.Add(grid, repBars, refBars, ratios)
	p.Y.Max = top * 1.3 // room for the legend and the ratios
	p.Legend.Add("replicator", repBars)
	p.Legend.Add("reference", refBars)
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(4)
	drainRef := "pg_recvlogical"
	if dr.RecvlogicalMissing != "" {
		drainRef = "pg_recvlogical: n/a"
	}
	p.X.Min, p.X.Max = -0.6, 1.6 // room for the outer bars' labels
	p.NominalX(
		fmt.Sprintf("backfill (%s events)\nreference: set-based SQL", thousands(bf.Events)),
		fmt.Sprintf("drain (%s transactions)\nreference: %s", thousands(dr.Events), drainRef))
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

func ratioLabel(replicator, reference float64) string {
	if reference <= 0 {
		return "ratio n/a"
	}
	return fmt.Sprintf("ratio %.2f×", replicator/reference)
}

// latencyChart draws the distribution (CDF) of commit-to-visible latency
// at each live rate, on a log scale, with the p99 targets marked.
func latencyChart(r *results, path string) error {
	p := plot.New()
	p.Title.Text = "Commit-to-visible latency, live (CDF)"
	p.X.Label.Text = "latency, ms (log scale)"
	p.Y.Label.Text = "share of events at or below"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	for i, l := range r.Live {
		if len(l.LatenciesMS) == 0 {
			continue
		}
		line, err := plotter.NewLine(cdf(l.LatenciesMS, 600))
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s ev/s (p99 %s ms)", thousands(l.Rate), latency(l.percentile(0.99))), line)
		if target, ok := latencyTargetsMS[l.Rate]; ok {
			mark, err := plotter.NewLine(plotter.XYs{{X: target, Y: 0}, {X: target, Y: 1}})
			if err != nil {
				return err
			}
			mark.Color = plotutil.Color(i)
			mark.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(mark)
			p.Legend.Add(fmt.Sprintf("p99 target at %s ev/s: %g ms", thousands(l.Rate), target), mark)
		}
	}
	p99, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 0.99}, {X: p.X.Max, Y: 0.99}})
	if err != nil {
		return err
	}
	p99.Color = color.Gray{Y: 128}
	p99.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
	p.Add(p99)
	p.Legend.Add("99% of events", p99)
	// A CDF leaves the top left corner empty.
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(8)
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

// cdf samples the empirical distribution of sorted values at about n
// points, always keeping the largest.
func cdf(sorted []float64, n int) plotter.XYs {
	step := max(1, len(sorted)/n)
	var pts plotter.XYs
	for i := 0; i < len(sorted); i += step {
		pts = append(pts, plotter.XY{X: positive(sorted[i]), Y: float64(i+1) / float64(len(sorted))})
	}
	if last := len(sorted) - 1; (last % step) != 0 {
		pts = append(pts, plotter.XY{X: positive(sorted[last]), Y: 1})
	}
	return pts
}

// positive keeps a value drawable on a log scale.
func positive(v float64) float64 { return max(v, 0.01) }
