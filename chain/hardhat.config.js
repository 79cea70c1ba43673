// The local JSON-RPC EVM node that contract tests and testers run against:
//
//   .venv/bin/python -m chain.hardhat_node          (127.0.0.1:8545, until Ctrl-C)
//
// chain/hardhat_node.py starts `hardhat --config chain/hardhat.config.js node` with this
// file and checks, once the node answers, that its chain id and accounts are the ones it
// derives from CHAIN_ID and MNEMONIC below (it keeps its own copy of both).
//
// Hardhat is used only as a node here: the contracts are compiled by chain/compile.js
// with the pinned solc, so there is no `solidity` entry, and `hardhat node` compiles and
// downloads nothing. Its telemetry prompt is switched off by the environment the Python
// side sets (CI=true, HARDHAT_DISABLE_TELEMETRY_PROMPT=true), so it never waits on stdin.
"use strict";

const CHAIN_ID = 31337;
// Hardhat's own publicly known test mnemonic: its accounts hold value on no real network.
const MNEMONIC = "test test test test test test test test test test test junk";

module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      // The EVM version the contracts are compiled for (solc evmVersion "prague").
      hardfork: "prague",
      chainId: CHAIN_ID,
      accounts: {
        mnemonic: MNEMONIC,
        path: "m/44'/60'/0'/0",
        initialIndex: 0,
        count: 10,
        accountsBalance: "10000000000000000000000",
      },
      // Automine: every transaction is mined into its own block as it arrives.
      mining: { auto: true, interval: 0 },
    },
  },
};
