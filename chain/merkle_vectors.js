// Known-answer vectors for chain/merkle.py, written by OpenZeppelin's own JS library.
//
//   node chain/merkle_vectors.js > tests/chain/fixtures/merkle_vectors.json
//
// Every value is derived from keccak256 of a label, so the output depends only on the
// pinned @openzeppelin/merkle-tree; tests/chain/test_merkle.py re-runs this script and
// fails when the committed fixture is not what the library produces today. Numbers are
// written as decimal strings (JSON numbers lose precision past 2**53), bytes as lowercase
// 0x-hex and addresses in their EIP-55 form: the JSON-safe form chain/merkle.py dumps.
"use strict";

const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
// The library's own keccak256 (hex in, hex out), so no other package is needed.
const { keccak256 } = require("@openzeppelin/merkle-tree/dist/hashes");
const { version } = require("@openzeppelin/merkle-tree/package.json");

const SIZES = [1, 2, 3, 7, 8, 33];
const UINT256_MAX = (1n << 256n) - 1n;
const INT256_MIN = -(1n << 255n);
const INT256_MAX = (1n << 255n) - 1n;
const STRINGS = ["", "a", "BlackTail", "héllo wörld", "日本語", "emoji 🦊", "x".repeat(70)];

const ascii = (text) => new Uint8Array(Buffer.from(text, "utf8"));

// 32 pseudo-random bytes as 0x-hex, a pure function of the label.
const random = (label) => keccak256(ascii(label));

function checksumAddress(lowerHex) {
  const digits = lowerHex.slice(2);
  const nibbles = keccak256(ascii(digits)).slice(2);
  let out = "0x";
  for (let i = 0; i < digits.length; i++) {
    out += parseInt(nibbles[i], 16) >= 8 ? digits[i].toUpperCase() : digits[i];
  }
  return out;
}

// Amounts span the edges (0, 1, the maximum) and the sizes a ledger holds (6 and 18
// decimal tokens), so the vectors cover one-word encodings of every magnitude.
function uint256(label) {
  const word = BigInt(random(label));
  const pick = Number(word % 8n);
  const amount =
    pick === 0
      ? 0n
      : pick === 1
        ? 1n
        : pick === 2
          ? UINT256_MAX - (word % 3n)
          : pick < 5
            ? word % 10n ** 12n
            : pick < 7
              ? word % 10n ** 27n
              : word;
  return amount.toString();
}

function int256(label) {
  const word = BigInt(random(label));
  const pick = Number(word % 6n);
  const value =
    pick === 0
      ? INT256_MIN + (word % 5n)
      : pick === 1
        ? INT256_MAX - (word % 5n)
        : pick === 2
          ? -(word % 10n ** 20n)
          : BigInt.asIntN(256, word);
  return value.toString();
}

const address = (label) => checksumAddress("0x" + random(label).slice(26));

const ITEMS = {
  address,
  uint256,
  int256,
  bytes32: (label) => random(label),
  bool: (label) => BigInt(random(label)) % 2n === 1n,
  string: (label) => STRINGS[Number(BigInt(random(label)) % BigInt(STRINGS.length))] + label,
  "(address,uint256)": (label) => [address(label + "/a"), uint256(label + "/n")],
  "uint8[]": (label) => {
    const bytes = random(label).slice(2);
    const length = parseInt(bytes.slice(0, 2), 16) % 4;
    return Array.from({ length }, (_, i) => parseInt(bytes.slice(2 + 2 * i, 4 + 2 * i), 16).toString());
  },
};

// The settlement's leaf (account, token, cumulative amount) comes first and gets every
// size; the others pin each ABI type's encoding on fewer sizes.
const ENCODINGS = [
  { encoding: ["address", "address", "uint256"], sizes: SIZES },
  { encoding: ["address", "uint256"], sizes: SIZES },
  { encoding: ["uint256"], sizes: [1, 2, 7, 33] },
  { encoding: ["bytes32", "string"], sizes: [1, 3, 8] },
  { encoding: ["bool", "int256"], sizes: [2, 7, 33] },
  { encoding: ["(address,uint256)", "uint8[]"], sizes: [3, 8] },
];

function vector(encoding, size, sortLeaves) {
  const name = `${encoding.join(",")}/${size}/${sortLeaves ? "sorted" : "unsorted"}`;
  // The edge picks repeat (0, 1, the maximum), and chain/merkle.py refuses a duplicated
  // value, so a repeat is drawn again under a longer label.
  const seen = new Set();
  const values = [];
  for (let i = 0; values.length < size; i++) {
    const value = encoding.map((type, position) => ITEMS[type](`${name}/${i}/${position}`));
    if (!seen.has(JSON.stringify(value))) {
      seen.add(JSON.stringify(value));
      values.push(value);
    }
  }
  const tree = StandardMerkleTree.of(values, encoding, { sortLeaves });
  const subsets = [[], [0], Array.from({ length: size }, (_, i) => i).filter((i) => i % 3 !== 1)];
  return {
    name,
    leafEncoding: encoding,
    sortLeaves,
    values,
    root: tree.root,
    leafHashes: values.map((value) => tree.leafHash(value)),
    proofs: values.map((_, i) => tree.getProof(i)),
    multiProofs: subsets.map((indices) => ({ indices, ...tree.getMultiProof(indices) })),
    dump: tree.dump(),
  };
}

const vectors = [];
for (const { encoding, sizes } of ENCODINGS) {
  for (const size of sizes) {
    for (const sortLeaves of [true, false]) {
      vectors.push(vector(encoding, size, sortLeaves));
    }
  }
}

// The library accepts a value twice (both leaves go in the tree); chain/merkle.py refuses
// such a tree, and this dump pins that it refuses the library's own.
const duplicated = StandardMerkleTree.of(
  [[address("dup/0"), "5"], [address("dup/1"), "6"], [address("dup/0"), "5"]],
  ["address", "uint256"],
).dump();

const output = { library: `@openzeppelin/merkle-tree@${version}`, vectors, duplicated };
process.stdout.write(JSON.stringify(output, null, 1) + "\n");
