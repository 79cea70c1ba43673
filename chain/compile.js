#!/usr/bin/env node
// Compiles chain/contracts/*.sol with the pinned npm `solc` through its standard-JSON
// interface and writes one artifact per contract to chain/build/<Contract>.json (or to the
// directory given with --out DIR). The output is deterministic: fixed source unit names
// (paths relative to the repository root), fixed settings, keys in a fixed order, two-space
// indent and a trailing newline, so a fresh compile can be compared byte for byte with the
// committed artifacts (tests/chain/test_artifacts.py does).
//
// Settings: optimizer on with 200 runs and the IR pipeline (viaIR), which measured cheaper
// on every figure of chain/gas-snapshot.json than the legacy pipeline at 200 or 10^6 runs,
// at the price of a slower compile (about 17 s instead of 6; see specs/contracts.md);
// evmVersion "prague" because py-evm, which runs the tests, stops at Prague.
//
// Usage: node chain/compile.js [--out DIR]
"use strict";

const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");
const SOURCES_DIR = path.join(__dirname, "contracts");
const NODE_MODULES = path.join(ROOT, "node_modules");
const EVM_VERSION = "prague";
const OPTIMIZER_RUNS = 200;

function fail(message) {
  process.stderr.write(`compile.js: ${message}\n`);
  process.exit(1);
}

function parseArguments(argv) {
  let out = path.join(__dirname, "build");
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--out") {
      if (i + 1 >= argv.length) fail("--out needs a directory");
      out = path.resolve(argv[i + 1]);
      i += 1;
    } else {
      fail(`unknown argument ${JSON.stringify(argv[i])} (usage: node chain/compile.js [--out DIR])`);
    }
  }
  return { out };
}

function loadSolc() {
  try {
    return require(path.join(NODE_MODULES, "solc"));
  } catch (error) {
    fail(`cannot load the npm solc package from ${NODE_MODULES} (run \`npm ci\`): ${error.message}`);
  }
  return null;
}

// Imports are resolved from node_modules only (`@openzeppelin/contracts/...`), so that the
// compile depends on nothing but the pinned packages.
function findImports(unitName) {
  const file = path.join(NODE_MODULES, unitName);
  if (!file.startsWith(NODE_MODULES + path.sep) || !fs.existsSync(file)) {
    return { error: `import not found in node_modules: ${unitName}` };
  }
  return { contents: fs.readFileSync(file, "utf8") };
}

function main() {
  const { out } = parseArguments(process.argv.slice(2));
  const solc = loadSolc();
  const files = fs.readdirSync(SOURCES_DIR).filter((name) => name.endsWith(".sol")).sort();
  if (files.length === 0) fail(`no .sol files in ${SOURCES_DIR}`);
  const sources = {};
  for (const name of files) {
    const unitName = path.posix.join("chain", "contracts", name);
    sources[unitName] = { content: fs.readFileSync(path.join(SOURCES_DIR, name), "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      evmVersion: EVM_VERSION,
      optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
      viaIR: true,
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const diagnostics = output.errors || [];
  for (const diagnostic of diagnostics) {
    process.stderr.write(diagnostic.formattedMessage || `${diagnostic.severity}: ${diagnostic.message}\n`);
  }
  const errors = diagnostics.filter((diagnostic) => diagnostic.severity === "error");
  if (errors.length > 0) fail(`${errors.length} compiler error(s); no artifacts written`);

  const compiler = solc.version();
  fs.mkdirSync(out, { recursive: true });
  const written = [];
  for (const unitName of Object.keys(sources)) {
    const contracts = (output.contracts || {})[unitName] || {};
    for (const contractName of Object.keys(contracts).sort()) {
      const contract = contracts[contractName];
      const artifact = {
        contractName,
        sourceName: unitName,
        compiler,
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
        metadata: contract.metadata,
      };
      const file = path.join(out, `${contractName}.json`);
      fs.writeFileSync(file, `${JSON.stringify(artifact, null, 2)}\n`);
      written.push(path.relative(process.cwd(), file) || file);
    }
  }
  if (written.length === 0) fail("the compiler produced no contracts");
  process.stdout.write(`compiled with solc ${compiler}: ${written.join(", ")}\n`);
}

main();
