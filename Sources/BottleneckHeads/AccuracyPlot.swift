import BottleneckImage
import Foundation

/// A grouped bar chart of accuracies in [0, 1]: one group per x category (e.g. a cut), one coloured bar per
/// series (e.g. a head) with its mean written above it and a ±std error bar, and an optional dashed
/// horizontal reference line (e.g. the raw-pixel baseline). Drawn with the same bitmap font and canvas as
/// ``ConfusionHeatmap`` and written as PNG through ``BottleneckImage/PNGWriter``.
public enum AccuracyPlot {
    /// One bar series: a name for the legend and, per group, a (mean, std) pair or nil when not measured.
    public struct Series: Sendable {
        /// Legend label.
        public var name: String
        /// `values[g]` is the bar of group `g`; nil leaves the slot empty.
        public var values: [(mean: Double, std: Double)?]

        /// Creates a series; `values.count` must equal the chart's group count.
        public init(name: String, values: [(mean: Double, std: Double)?]) {
            self.name = name; self.values = values
        }
    }

    /// Bar colours, cycled per series (colour-blind-safe Tableau-like palette).
    static let palette: [(UInt8, UInt8, UInt8)] = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    ]

    /// Renders the chart. `groups` label the x axis; `reference` draws a dashed red line labelled
    /// `referenceLabel`. Size grows with groups × series; O(width · height).
    public static func render(title: String, groups: [String], series: [Series], reference: Double? = nil,
                              referenceLabel: String = "baseline") -> RGBImage {
        let barWidth = 40, barGap = 4, groupGap = 36
        let plotHeight = 320
        let left = 56, top = 40, bottom = 40
        let groupWidth = max(1, series.count) * (barWidth + barGap) - barGap
        let plotWidth = max(groups.count * (groupWidth + groupGap) + groupGap, 240)
        let legendWidth = 24 + 6 * max(referenceLabel.count + 6, series.map { $0.name.count }.max() ?? 0) + 16
        // Everything drawn must lie inside the canvas: the title (12 px per glyph at scale 2) can be the widest item.
        let width = max(left + plotWidth + 16 + legendWidth, left + title.count * 12 + 16)
        let height = top + plotHeight + bottom
        var canvas = Canvas(width: width, height: height)
        let ink: (UInt8, UInt8, UInt8) = (30, 30, 30)
        func y(_ v: Double) -> Int { top + plotHeight - Int((min(max(v, 0), 1) * Double(plotHeight)).rounded()) }

        canvas.text(title, x: left, y: 12, scale: 2, color: ink)
        // Grid lines and y tick labels every 0.1, labelled every 0.2.
        for t in 0...10 {
            let v = Double(t) / 10, py = y(v)
            canvas.fill(x: left, y: py, w: plotWidth, h: 1, color: t % 2 == 0 ? (200, 200, 200) : (232, 232, 232))
            if t % 2 == 0 {
                let s = String(format: "%.1f", v)
                canvas.text(s, x: left - 6 - s.count * 6, y: py - 3, scale: 1, color: ink)
            }
        }
        canvas.fill(x: left, y: top, w: 1, h: plotHeight + 1, color: ink)
        canvas.fill(x: left, y: top + plotHeight, w: plotWidth, h: 1, color: ink)
        canvas.text("ACCURACY", x: 4, y: top - 14, scale: 1, color: ink)

        for (g, label) in groups.enumerated() {
            let gx = left + groupGap + g * (groupWidth + groupGap)
            let name = String(label.prefix((groupWidth + groupGap) / 12))
            canvas.text(name, x: gx + (groupWidth - name.count * 12) / 2, y: top + plotHeight + 10, scale: 2, color: ink)
            for (s, ser) in series.enumerated() {
                guard g < ser.values.count, let v = ser.values[g] else { continue }
                let bx = gx + s * (barWidth + barGap)
                let color = palette[s % palette.count]
                let yTop = y(v.mean)
                canvas.fill(x: bx, y: yTop, w: barWidth, h: top + plotHeight - yTop, color: color)
                if v.std > 0 {
                    let y0 = y(v.mean + v.std), y1 = y(v.mean - v.std)
                    canvas.fill(x: bx + barWidth / 2, y: y0, w: 1, h: max(1, y1 - y0 + 1), color: ink)
                    canvas.fill(x: bx + barWidth / 2 - 5, y: y0, w: 11, h: 1, color: ink)
                    canvas.fill(x: bx + barWidth / 2 - 5, y: y1, w: 11, h: 1, color: ink)
                }
                let s = String(format: "%.3f", v.mean)
                canvas.text(s, x: bx + (barWidth - s.count * 6) / 2, y: max(top - 10, y(v.mean + v.std) - 10), scale: 1, color: ink)
            }
        }
        if let r = reference {
            let py = y(r)
            var x = left
            while x < left + plotWidth {
                canvas.fill(x: x, y: py - 1, w: min(8, left + plotWidth - x), h: 2, color: (214, 39, 40))
                x += 14
            }
        }
        // Legend to the right of the plot.
        var ly = top + 4
        let lx = left + plotWidth + 16
        for (s, ser) in series.enumerated() {
            canvas.fill(x: lx, y: ly, w: 14, h: 10, color: palette[s % palette.count])
            canvas.text(ser.name, x: lx + 20, y: ly + 2, scale: 1, color: ink)
            ly += 18
        }
        if let r = reference {
            canvas.fill(x: lx, y: ly + 4, w: 6, h: 2, color: (214, 39, 40))
            canvas.fill(x: lx + 9, y: ly + 4, w: 5, h: 2, color: (214, 39, 40))
            canvas.text(referenceLabel, x: lx + 20, y: ly + 2, scale: 1, color: ink)
            canvas.text(String(format: "%.3f", r), x: lx + 20, y: ly + 12, scale: 1, color: ink)
        }
        return RGBImage(width: width, height: height, pixels: canvas.pixels)
    }

    /// Renders and writes the PNG.
    /// - Throws: ``HeadError/io(path:reason:)`` when encoding or writing fails.
    public static func write(title: String, groups: [String], series: [Series], reference: Double? = nil,
                             referenceLabel: String = "baseline", to url: URL) throws {
        let image = render(title: title, groups: groups, series: series, reference: reference, referenceLabel: referenceLabel)
        do { try PNGWriter.write(image, to: url) } catch {
            throw HeadError.io(path: url.path, reason: "cannot write accuracy plot: \(error)")
        }
    }
}
