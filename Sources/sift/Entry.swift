import Qwen3

@main
enum Entry {
    static func main() async {
        // OpenBLAS picks its kernels when it loads; re-exec with a fast core type before anything runs.
        BLAS.ensureFastCore()
        await SiftCommand.main()
    }
}
