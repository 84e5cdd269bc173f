// The `tfm inspect`, `tfm diff` and `tfm plot` subcommands: their options are
// declared here so main.cpp only adds and dispatches them.
#pragma once

#include <memory>
#include <optional>
#include <ostream>

namespace CLI {
class App;
}

namespace tfm::train {

struct ToolCommands;

// Adds inspect, diff and plot to the command line.
std::shared_ptr<ToolCommands> add_tool_commands(CLI::App& app);

// Runs the tool the parsed command line selected and returns its exit
// status, or nullopt when none of them was selected. Throws tfm::Error.
std::optional<int> run_tool_commands(const ToolCommands& tools, std::ostream& out);

}  // namespace tfm::train
