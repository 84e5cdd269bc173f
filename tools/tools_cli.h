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

}  // namespace tfm::train
