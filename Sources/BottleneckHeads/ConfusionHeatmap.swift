import BottleneckImage
import Foundation

/// Renders a confusion matrix as an RGB heat map (row-normalised: colour = fraction of the true class),
/// with counts in the cells, class indices on top and "index name" labels on the left, drawn with a
/// built-in 5x7 bitmap font. Written as PNG through ``BottleneckImage/PNGWriter``.
public enum ConfusionHeatmap {
    /// Draws the heat map for `confusion[true][predicted]` with `classNames`.
    /// Cell size adapts to the class count (48 px for few classes down to 14 px); O(width · height).
    public static func render(confusion: [[Int]], classNames: [String]) -> RGBImage {
        let k = confusion.count
        let cell = max(14, min(48, 960 / max(k, 1)))
        let glyphScale = cell >= 36 ? 2 : 1
        let labelChars = min(24, classNames.map { $0.count }.max() ?? 0) + String(k - 1).count + 1
        let margin = 8
        let left = margin + labelChars * 6 * glyphScale + 6
        let top = margin + 9 * glyphScale + 6 + 9 * glyphScale
        let width = left + max(k * cell, 9 * 6 * glyphScale) + margin, height = top + k * cell + margin
        var canvas = Canvas(width: width, height: height)
        canvas.text("PREDICTED", x: left, y: margin, scale: glyphScale, color: (60, 60, 60))
        for c in 0..<k {
            let s = String(c)
            canvas.text(s, x: left + c * cell + (cell - s.count * 6 * glyphScale) / 2, y: margin + 9 * glyphScale + 4,
                        scale: glyphScale, color: (30, 30, 30))
        }
        for r in 0..<k {
            let rowSum = confusion[r].reduce(0, +)
            let name = String(classNames[r].prefix(24))
            canvas.text("\(r) \(name)", x: margin, y: top + r * cell + (cell - 7 * glyphScale) / 2, scale: glyphScale,
                        color: (30, 30, 30))
            for c in 0..<k {
                let frac = rowSum == 0 ? 0 : Double(confusion[r][c]) / Double(rowSum)
                let col = colormap(frac)
                canvas.fill(x: left + c * cell, y: top + r * cell, w: cell - 1, h: cell - 1, color: col)
                let s = String(confusion[r][c])
                let ts = s.count * 6 * glyphScale <= cell - 2 ? glyphScale : 1
                if s.count * 6 * ts <= cell - 1 {
                    let dark = frac > 0.5
                    canvas.text(s, x: left + c * cell + (cell - s.count * 6 * ts) / 2, y: top + r * cell + (cell - 7 * ts) / 2,
                                scale: ts, color: dark ? (255, 255, 255) : (20, 20, 20))
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: canvas.pixels)
    }

    /// Renders and writes the PNG.
    /// - Throws: ``HeadError/io(path:reason:)`` when encoding or writing fails.
    public static func write(confusion: [[Int]], classNames: [String], to url: URL) throws {
        do { try PNGWriter.write(render(confusion: confusion, classNames: classNames), to: url) } catch {
            throw HeadError.io(path: url.path, reason: "cannot write confusion heat map: \(error)")
        }
    }

    /// White → blue ramp for a fraction in [0, 1]: (247, 251, 255) at 0 to (8, 48, 107) at 1.
    public static func colormap(_ t: Double) -> (UInt8, UInt8, UInt8) {
        let u = min(max(t, 0), 1)
        func lerp(_ a: Double, _ b: Double) -> UInt8 { UInt8((a + (b - a) * u).rounded()) }
        return (lerp(247, 8), lerp(251, 48), lerp(255, 107))
    }
}

/// A white RGB drawing surface with rectangle fills and bitmap text.
struct Canvas {
    let width: Int, height: Int
    var pixels: [UInt8]

    init(width: Int, height: Int) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 255, count: width * height * 3)
    }

    mutating func fill(x: Int, y: Int, w: Int, h: Int, color: (UInt8, UInt8, UInt8)) {
        // Clip to the canvas; a rectangle wholly outside it draws nothing (and must not form an inverted range).
        let x0 = max(0, x), x1 = min(width, x + w), y0 = max(0, y), y1 = min(height, y + h)
        guard x0 < x1, y0 < y1 else { return }
        for yy in y0..<y1 {
            for xx in x0..<x1 {
                let o = (yy * width + xx) * 3
                pixels[o] = color.0; pixels[o + 1] = color.1; pixels[o + 2] = color.2
            }
        }
    }

    /// Draws `s` with 5x7 glyphs on a 6-pixel advance, magnified by `scale`; unknown characters draw as '?'.
    mutating func text(_ s: String, x: Int, y: Int, scale: Int, color: (UInt8, UInt8, UInt8)) {
        var cx = x
        for ch in s.uppercased() {
            let rows = BitmapFont.glyphs[ch] ?? BitmapFont.glyphs["?"]!
            for (r, bits) in rows.enumerated() {
                for c in 0..<5 where bits & (1 << (4 - c)) != 0 {
                    fill(x: cx + c * scale, y: y + r * scale, w: scale, h: scale, color: color)
                }
            }
            cx += 6 * scale
        }
    }
}

/// A 5x7 pixel font: each glyph is 7 rows, bit 4 = leftmost column.
enum BitmapFont {
    static let glyphs: [Character: [UInt8]] = [
        " ": [0, 0, 0, 0, 0, 0, 0],
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12],
        "A": [14, 17, 17, 31, 17, 17, 17], "B": [30, 17, 17, 30, 17, 17, 30], "C": [14, 17, 16, 16, 16, 17, 14],
        "D": [28, 18, 17, 17, 17, 18, 28], "E": [31, 16, 16, 30, 16, 16, 31], "F": [31, 16, 16, 30, 16, 16, 16],
        "G": [14, 17, 16, 23, 17, 17, 15], "H": [17, 17, 17, 31, 17, 17, 17], "I": [14, 4, 4, 4, 4, 4, 14],
        "J": [7, 2, 2, 2, 2, 18, 12], "K": [17, 18, 20, 24, 20, 18, 17], "L": [16, 16, 16, 16, 16, 16, 31],
        "M": [17, 27, 21, 21, 17, 17, 17], "N": [17, 17, 25, 21, 19, 17, 17], "O": [14, 17, 17, 17, 17, 17, 14],
        "P": [30, 17, 17, 30, 16, 16, 16], "Q": [14, 17, 17, 17, 21, 18, 13], "R": [30, 17, 17, 30, 20, 18, 17],
        "S": [15, 16, 16, 14, 1, 1, 30], "T": [31, 4, 4, 4, 4, 4, 4], "U": [17, 17, 17, 17, 17, 17, 14],
        "V": [17, 17, 17, 17, 17, 10, 4], "W": [17, 17, 17, 21, 21, 21, 10], "X": [17, 17, 10, 4, 10, 17, 17],
        "Y": [17, 17, 10, 4, 4, 4, 4], "Z": [31, 1, 2, 4, 8, 16, 31],
        "-": [0, 0, 0, 31, 0, 0, 0], "_": [0, 0, 0, 0, 0, 0, 31], ".": [0, 0, 0, 0, 0, 12, 12],
        ":": [0, 12, 12, 0, 12, 12, 0], "/": [0, 1, 2, 4, 8, 16, 0], "%": [24, 25, 2, 4, 8, 19, 3],
        "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8], "?": [14, 17, 1, 2, 4, 0, 4],
        "+": [0, 4, 4, 31, 4, 4, 0], "'": [4, 4, 8, 0, 0, 0, 0], ",": [0, 0, 0, 0, 12, 4, 8],
    ]
}
