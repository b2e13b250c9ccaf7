public enum Qwen3Placeholder {}
