#!/usr/bin/env bash
# init-model writes the same bytes as before the family redesign (main at 58f36a4) for the same
# flags and seed: config.json, every safetensors file and index, and what it prints. Models
# made for tests and benchmarks (and their checkpoints' fingerprints) stay valid. The sums were
# taken with main's build; a mismatch lists every differing file.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

# name, then the flags
SETS=$(cat <<'SETS'
gpt2_tied --layers 2 --d 32 --heads 4 --vocab 64 --ctx 16 --seed 5 --random-norms
gpt2_untied_prefix_bf16_shards3 --layers 2 --d 32 --heads 4 --d-ff 40 --vocab 64 --ctx 16 --untied --prefix --dtype bf16 --shards 3 --seed 6 --random-norms --std 0.05
llama_gqa --arch llama --layers 2 --d 32 --heads 4 --kv-heads 2 --vocab 64 --ctx 32 --seed 7 --random-norms
llama_tied_hd16_f16_shards2 --arch llama --tied --layers 2 --d 48 --heads 4 --kv-heads 1 --head-dim 16 --vocab 64 --ctx 32 --dtype f16 --shards 2 --seed 8 --rope-theta 50000
qwen2 --arch qwen2 --layers 2 --d 32 --heads 4 --kv-heads 2 --vocab 64 --ctx 32 --seed 9 --random-norms
llama32_shape --shape llama-3.2-1b --layers 1 --d 64 --heads 4 --kv-heads 2 --d-ff 96 --vocab 64 --ctx 64 --seed 10
smollm2_shape_untied --shape smollm2-135m --layers 2 --d 36 --heads 3 --kv-heads 1 --vocab 50 --ctx 64 --untied --seed 11
qwen25_shape --shape qwen2.5-0.5b --layers 1 --d 28 --heads 7 --kv-heads 1 --d-ff 64 --vocab 70 --ctx 64 --seed 12 --random-norms
SETS
)

# sha256 name/file (stdout: what init-model printed)
PINNED=$(cat <<'PINS'
33bf03bd5b5405e07f0b20e8381be59f313a69ab7f18544da99e13230c13f561 gpt2_tied/config.json
79198c23fabd97de71ff98ded2a65bbb8c33f9455f2e2b428a81e5e149b1061d gpt2_tied/model.safetensors
0b6b6f24d19999ec01591faf1150a56d0622be8d7449525c0cc58895c75ae87a gpt2_tied/stdout
091c72913a7115e68e537c505b6f2f5bc93c5a9284ce6e45472d74db4e2a260f gpt2_untied_prefix_bf16_shards3/config.json
3c6a01db0c6d350e9e0990cdd3fe675f46c95728ae556d0eaedb5c4cc1921a69 gpt2_untied_prefix_bf16_shards3/model-00001-of-00003.safetensors
3653b3de74642578d8a57dda1dc5c9e6cd1ed53a288042e531519e725dfd676a gpt2_untied_prefix_bf16_shards3/model-00002-of-00003.safetensors
1a3d9f4267246d6fe243058206cf4dfc19982fe204ab44e2dc7a956c3789a9b9 gpt2_untied_prefix_bf16_shards3/model-00003-of-00003.safetensors
1e87711c7096b2723d9eddae0149743f6b0c91756a49d80e3da0eb359db3d542 gpt2_untied_prefix_bf16_shards3/model.safetensors.index.json
7885042a6871012aacd813cf269704bc543fbc76bcd56c31fccc46d7df56ee05 gpt2_untied_prefix_bf16_shards3/stdout
bea0142cf0b72f056abe754f3005311525c81d688970fac0d8e84dde8ed063e5 llama_gqa/config.json
f9badeae940c2cac5f2155ef66208e32a6ff88b3d8c0253d89c91c370f0c9a93 llama_gqa/model.safetensors
3ef24bfe0b9bf3dc03edd90ddbd6911decbfbe2aab6ed90cfb41e96c9a851bc7 llama_gqa/stdout
935fe92116a599160f4b4e0cfa2a4dfb7a83cd629b5454bb3e1d224d9a8e40d5 llama_tied_hd16_f16_shards2/config.json
ef5d5bf1a4026a8cf70d35e953e5e19aa4965012103f35eeb72020acfd3cc8aa llama_tied_hd16_f16_shards2/model-00001-of-00002.safetensors
3ff9a5226ba12aa5ab85a72cf1d3f3753844f8e8c2aaae4775e9591026f61e5e llama_tied_hd16_f16_shards2/model-00002-of-00002.safetensors
bbc55d2cb7da6b76b0db0225ea1984fe22dc3c03d7edeee3677b74b7d2004b69 llama_tied_hd16_f16_shards2/model.safetensors.index.json
2742ef829c8cf33bc7d77ccf96948ef9fbe28d4e0deedc3f1bf7ca922aa15a18 llama_tied_hd16_f16_shards2/stdout
8868dd26e9894bd5687e7602370a0c5e71b66b2aaf6b29de53d91ba1046e5b3d qwen2/config.json
2c7bfa7f1bd2f08ed038c88bea8e228c85576b888dc561ec74f34e0ff4c311dc qwen2/model.safetensors
8b6e86179110d45605cc4b47b9e41e4b43d6d5cf7d8ad6ccd296b3d60b96558a qwen2/stdout
f50f6d9bf0e6f05e9ef77df6787e5d440251adbd5c1cae19e17b4f06ecaa47cb llama32_shape/config.json
06337c872fe977b2aee20cfa271be12b885cbd5bc329bab00d40fb5cb2ceadf7 llama32_shape/model.safetensors
c5c136bfb1c8ddb7dfc18d76e1cc4a3ba68f20085853994f3ec9a7a7b7ccb91e llama32_shape/stdout
bbf1c777074947f3c88c97e344c1cba6e350a3fa34dcf50ae1a9349e0f701015 smollm2_shape_untied/config.json
d6e7203f4053677571b487b90e668c25687415d930eccd39cfcc5109ae0a2d5f smollm2_shape_untied/model.safetensors
7fb726addefe98f7f20f68e685b79277e3d90c5292fe6fe77fc0288915083f79 smollm2_shape_untied/stdout
b678757ee6a1659f7212781c203d012683d5a1d06bdef8305666c219d1580f07 qwen25_shape/config.json
047c6a92e3e154b25674ddd50b2319d164339a844e6f60f987466a732fb7528d qwen25_shape/model.safetensors
5c6cfe9c501fe0f2215a2642d63e6b1a8d513d891bcd5bf064ebcc7775e7f5f0 qwen25_shape/stdout
PINS
)

while read -r name args; do
  # shellcheck disable=SC2086 # the flags are words
  "$SP_CLI" init-model $args "$name" > "$name.stdout" || fail "init-model $args $name"
done <<< "$SETS"

seen=$(while read -r name _; do
  for f in $(cd "$name" && ls | sort); do echo "$(sha256sum < "$name/$f" | cut -c1-64) $name/$f"; done
  echo "$(sha256sum < "$name.stdout" | cut -c1-64) $name/stdout"
done <<< "$SETS")

if [[ "$seen" != "$PINNED" ]]; then
  diff <(echo "$PINNED") <(echo "$seen") >&2 || true
  fail "init-model output differs from the pinned sums (< pinned, > now)"
fi
ok "init-model: $(echo "$PINNED" | wc -l) files and outputs of $(echo "$SETS" | wc -l) flag sets byte-identical to the pins"
