#!/usr/bin/env node
/**
 * The `tunkit` command: one module per subcommand.
 *
 *   tunkit proxy --socks5 HOST:PORT [...]   route a TUN's traffic through a proxy (tun2socks)
 */
import { main as proxyMain, PROXY_HELP } from './proxy.js'

const HELP = `Usage: tunkit COMMAND [OPTIONS]

TUN/TAP devices from the command line.

Commands:
  proxy     send every connection and UDP session entering a new TUN through a SOCKS5 or HTTP proxy
            (or directly) by rules, with fake-ip DNS (tun2socks)
  help      this text; \`tunkit COMMAND --help\` for a command

Examples:
  tunkit proxy --socks5 127.0.0.1:1080 --route default
  tunkit proxy --http user:pass@10.0.0.1:3128 --route 10.0.0.0/8 --dns off
`

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case 'proxy':
      return proxyMain(rest)
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      if (rest[0] === 'proxy') process.stdout.write(PROXY_HELP)
      else process.stdout.write(HELP)
      return cmd === undefined ? 2 : 0
    default:
      process.stderr.write(`tunkit: unknown command '${cmd}'\n\n${HELP}`)
      return 2
  }
}

process.exitCode = await run(process.argv.slice(2))
