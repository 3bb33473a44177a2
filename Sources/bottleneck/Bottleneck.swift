import ArgumentParser
import BottleneckImage
import Foundation

/// The `bottleneck` command: transfer learning on images from the command line.
@main
struct Bottleneck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bottleneck",
        abstract: "Transfer learning on images: decode, extract CNN bottleneck features, train small classifiers.",
        version: "0.1.0",
        subcommands: [
            ModelsCommand.self, BenchCommand.self,
            InspectCommand.self, PreprocessCommand.self,
            ExtractCommand.self, MergeCommand.self, DatasetsCommand.self,
            WeightsCommand.self, ClassifyCommand.self,
            TrainCommand.self, EvaluateCommand.self, PredictCommand.self, FinetuneCommand.self, BenchmarkCommand.self,
        ]
    )

    /// Entry point: checks the CPU and fixes the BLAS environment first (it must precede library
    /// initialisation), applies the decoding limits from the environment, then parses.
    static func main() {
        BLASEnvironment.ensureSupportedCPU()
        BLASEnvironment.ensureBestCoreType()
        do { try DecodeLimitSettings.apply(environment: ProcessInfo.processInfo.environment) } catch { Self.exit(withError: ValidationError("\(error)")) }
        Self.main(nil)
    }
}
