// The `tfm` subcommands: every option is declared here, so main.cpp only
// creates the application, parses and dispatches.
#pragma once

#include <iosfwd>
#include <memory>

namespace CLI {
class App;
}

namespace tfm::train {

struct Commands;

// Adds train, help-config, sample, translate, eval, prepare-data, inspect,
// diff and plot to the command line.
std::shared_ptr<Commands> add_commands(CLI::App& app);

// Runs the subcommand the parsed command line selected and returns its exit
// status. Throws tfm::Error for bad input.
int run_command(const Commands& commands, std::istream& in, std::ostream& out);

// The whole command line: parses argv, runs the subcommand and returns the
// process's exit status. --help prints the usage to `out` and returns 0;
// every parse error and every tfm::Error is one line "tfm: error: ..." on
// `err` and status 1 (an unknown or missing command lists the commands).
int parse_and_run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace tfm::train
